"""Once-for-All MobileNetV3: the space (timm models from per-block strings) and its weight-sharing supernet."""

from search_spaces.ofa_mbv3.space import OFAMobileNetV3
from search_spaces.ofa_mbv3.supernet import OFASupernet

__all__ = ["OFAMobileNetV3", "OFASupernet"]
