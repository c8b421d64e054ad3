"""Accuracy sources beside the supernet: a table of trained accuracies (`table:NAME:COLUMN` or `table:PATH:COLUMN`)."""

from __future__ import annotations

from nas.accuracy.tables import SHIPPED, AccuracyTable, load_accuracy_table

__all__ = ["SHIPPED", "AccuracyTable", "load_accuracy_table"]
