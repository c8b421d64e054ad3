"""Weight-sharing supernets: one set of weights, any subnet active, subnets extracted as standalone models."""
from __future__ import annotations

from nas.supernet.bn import recalibrate_bn
from search_spaces.ofa_mbv3_supernet import OFASupernet

__all__ = ["OFASupernet", "recalibrate_bn"]
