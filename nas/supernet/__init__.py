"""Weight-sharing supernets: one set of weights, any subnet active, subnets extracted as standalone models."""
from __future__ import annotations

from nas.supernet.bn import recalibrate_bn
from nas.supernet.ofa_mbv3 import OFASupernet

__all__ = ["OFASupernet", "recalibrate_bn"]
