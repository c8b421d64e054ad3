"""Once-for-All MobileNetV3's fixed layout (stage widths, strides, activations) and one block's operators."""

from __future__ import annotations

from functools import cache

from search_spaces.base import Op

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
MAX_DEPTH = 4
NUM_STAGES = 5
NUM_LAYERS = NUM_STAGES * MAX_DEPTH
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_RELU = (True, True, False, False, False)
STAGE_SE = (False, True, False, True, True)
STEM_WIDTH, FINAL_WIDTH, HEAD_WIDTH = 16, 960, 1280
DEFAULT_RESOLUTIONS = tuple(range(128, 225, 4))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of `divisor`, never below 90% of `v` (timm and OFA agree)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _out(hw: int, stride: int) -> int:
    return (hw + stride - 1) // stride


@cache
def block_operators(c: int, c_out: int, k: int, e: int, stride: int, hw: int, se: bool) -> tuple[Op, ...]:
    """The operators of one inverted-residual block as timm builds it, at input size hw."""
    mid, out_hw = make_divisible(c * e), _out(hw, stride)
    ops = [Op("conv", c, mid, 1, 1, hw, hw, 2 * mid), Op("conv", mid, mid, k, mid, hw, out_hw, 2 * mid)]
    if se:
        rd = make_divisible(mid * 0.25)
        ops += [
            Op("pool", mid, mid, out_hw, mid, out_hw, 1),
            Op("conv", mid, rd, 1, 1, 1, 1, rd),
            Op("conv", rd, mid, 1, 1, 1, 1, mid),
            Op("eltwise", mid, mid, in_hw=out_hw, out_hw=out_hw),
        ]
    ops.append(Op("conv", mid, c_out, 1, 1, out_hw, out_hw, 2 * c_out))
    if stride == 1 and c == c_out:
        ops.append(Op("eltwise", c_out, c_out, in_hw=out_hw, out_hw=out_hw))
    return tuple(ops)
