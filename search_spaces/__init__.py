"""Search spaces: what an architecture is. Imports nothing else of hwnas."""
from __future__ import annotations

from search_spaces.base import SearchSpace, count_flops, count_params
from search_spaces.registry import create, get, names, register

# Importing the families registers them.
from search_spaces import fbnet, hybrid_lm, nasbench201, ofa_mbv3  # noqa: E402,F401

__all__ = ["SearchSpace", "count_flops", "count_params", "create", "get", "names", "register"]
