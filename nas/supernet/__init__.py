"""Supernet training (sandwich rule), BN recalibration and subnet accuracy, typed to `search_spaces.Supernet`."""

from __future__ import annotations

from nas.supernet.bn import recalibrate_bn

__all__ = ["recalibrate_bn"]
