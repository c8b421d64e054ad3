"""Search spaces: what an architecture is. Imports nothing else of hwnas."""

from __future__ import annotations

# Importing the families registers them.
from search_spaces import fbnet, hybrid_lm, nasbench201, ofa_mbv3  # noqa: F401
from search_spaces.archs import read_archs, sample_archs
from search_spaces.base import SearchSpace, Supernet, count_flops, count_params
from search_spaces.registry import create, get, load_space, names, parse_space_spec, register

__all__ = [
    "SearchSpace",
    "Supernet",
    "count_flops",
    "count_params",
    "create",
    "get",
    "load_space",
    "names",
    "parse_space_spec",
    "read_archs",
    "register",
    "sample_archs",
]
