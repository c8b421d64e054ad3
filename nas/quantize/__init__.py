"""Mixed-precision post-training quantization: per-layer sensitivities (Hessian, with inter-layer
dependencies), fake quantization, search (bisection, latency-aware, ILP), onnxruntime QDQ deployment."""

from nas.quantize.mixed import MixedPrecision, QuantizeConfig, QuantizeData
from nas.quantize.search import SEARCHES
from nas.quantize.sensitivity import METHODS

__all__ = ["MixedPrecision", "QuantizeConfig", "QuantizeData", "SEARCHES", "METHODS"]
