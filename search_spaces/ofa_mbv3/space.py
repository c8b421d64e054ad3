"""Once-for-All MobileNetV3 space: per-layer kernel and expand ratio, per-stage depth, resolution.

Models are timm MobileNetV3 networks built from one block string per layer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import nn

from search_spaces.base import Gene, Op, SearchSpace, at_least
from search_spaces.ofa_mbv3.blocks import (
    DEFAULT_RESOLUTIONS,
    DEPTHS,
    EXPANDS,
    FINAL_WIDTH,
    HEAD_WIDTH,
    KERNELS,
    MAX_DEPTH,
    NUM_LAYERS,
    NUM_STAGES,
    STAGE_RELU,
    STAGE_SE,
    STAGE_STRIDES,
    STAGE_WIDTHS,
    STEM_WIDTH,
    _out,
    block_operators,
    make_divisible,
)
from search_spaces.ofa_mbv3.supernet import OFASupernet
from search_spaces.registry import register


@register("ofa_mbv3")
class OFAMobileNetV3(SearchSpace):
    """An arch is (d[5], ks[20], e[20], r) flattened into one tuple, depths first."""

    def __init__(
        self,
        resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        spec: str | None = None,
    ) -> None:
        self.spec = spec or self.name
        resolutions = tuple(int(r) for r in resolutions)
        if not resolutions or min(resolutions) < 32:
            raise ValueError(f"ofa_mbv3: resolutions must be >= 32, but got {list(resolutions)}")
        if width_mult <= 0:
            raise ValueError(f"ofa_mbv3: width_mult must be > 0, but got {width_mult}")
        self.resolutions = resolutions
        self.width_mult = width_mult
        self.num_classes = at_least("ofa_mbv3", "num_classes", num_classes)
        self.genes = (
            tuple(Gene(f"d{s}", DEPTHS) for s in range(NUM_STAGES))
            + tuple(Gene(f"ks{i}", KERNELS) for i in range(NUM_LAYERS))
            + tuple(Gene(f"e{i}", EXPANDS) for i in range(NUM_LAYERS))
            + (Gene("r", resolutions),)
        )

    # ---- views of the flat tuple -----------------------------------------------------------
    @staticmethod
    def depths(arch: tuple) -> tuple[int, ...]:
        return tuple(arch[:NUM_STAGES])

    @staticmethod
    def kernels(arch: tuple) -> tuple[int, ...]:
        return tuple(arch[NUM_STAGES : NUM_STAGES + NUM_LAYERS])

    @staticmethod
    def expands(arch: tuple) -> tuple[int, ...]:
        return tuple(arch[NUM_STAGES + NUM_LAYERS : NUM_STAGES + 2 * NUM_LAYERS])

    @staticmethod
    def resolution(arch: tuple) -> int:
        return int(arch[-1])

    def make(self, ks: Sequence[int], e: Sequence[int], d: Sequence[int], r: int) -> tuple:
        return self.validate(tuple(d) + tuple(ks) + tuple(e) + (r,))

    def active(self, arch: tuple) -> list[bool]:
        layer_on = [i % MAX_DEPTH < arch[i // MAX_DEPTH] for i in range(NUM_LAYERS)]
        return [True] * NUM_STAGES + layer_on + layer_on + [True]

    def canonical(self, arch: tuple) -> tuple:
        mask = self.active(arch)
        return tuple(v if on else gene.options[0] for v, on, gene in zip(arch, mask, self.genes))

    def size(self) -> int:
        per_stage = sum((len(KERNELS) * len(EXPANDS)) ** d for d in DEPTHS)
        return per_stage**NUM_STAGES * len(self.resolutions)

    def layers(self, arch: tuple) -> list[tuple[int, int, int, int, int]]:
        """(stage, kernel, expand, out channels, stride) of each active layer."""
        ks, es, out = self.kernels(arch), self.expands(arch), []
        for s, depth in enumerate(self.depths(arch)):
            for j in range(depth):
                i = s * MAX_DEPTH + j
                c = make_divisible(STAGE_WIDTHS[s] * self.width_mult)
                out.append((s, ks[i], es[i], c, STAGE_STRIDES[s] if j == 0 else 1))
        return out

    # ---- strings ---------------------------------------------------------------------------
    def to_str(self, arch: tuple) -> str:
        arch = self.validate(arch)
        d = {
            "ks": list(self.kernels(arch)),
            "e": list(self.expands(arch)),
            "d": list(self.depths(arch)),
            "r": self.resolution(arch),
        }
        return json.dumps(d, separators=(",", ":"))

    def from_str(self, s: str) -> tuple:
        try:
            d = json.loads(s)
        except json.JSONDecodeError as err:
            raise ValueError(
                f'ofa_mbv3: {s[:80]!r} is not JSON like {{"ks":[...],"e":[...],"d":[...],"r":160}} ({err.msg})'
            ) from None
        except RecursionError:
            raise ValueError(f"ofa_mbv3: {s[:40]!r}... nests too deeply to be an architecture") from None
        if not isinstance(d, dict) or set(d) != {"ks", "e", "d", "r"}:
            raise ValueError(f"ofa_mbv3: {s!r} must be an object with exactly the keys ks, e, d, r")
        for key, n in (("ks", NUM_LAYERS), ("e", NUM_LAYERS), ("d", NUM_STAGES)):
            if not isinstance(d[key], list) or len(d[key]) != n:
                raise ValueError(f"ofa_mbv3: {key!r} must be a list of {n} integers in {s!r}")
        return self.make(d["ks"], d["e"], d["d"], d["r"])

    # ---- models ----------------------------------------------------------------------------
    def block_strings(self, arch: tuple) -> list[list[str]]:
        """timm arch_def for `arch`: one list of block strings per stage."""
        stem = make_divisible(STEM_WIDTH * self.width_mult)
        stages = [[f"ds_r1_k3_s1_e1_c{stem}_nre"]]
        for s in range(NUM_STAGES):
            stages.append([])
        for s, k, e, c, stride in self.layers(arch):
            suffix = ("_se0.25" if STAGE_SE[s] else "") + ("_nre" if STAGE_RELU[s] else "")
            stages[s + 1].append(f"ir_r1_k{k}_s{stride}_e{e}_c{c}{suffix}")
        stages.append([f"cn_r1_k1_s1_c{make_divisible(FINAL_WIDTH * self.width_mult)}"])
        return stages

    def build(self, arch: tuple, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
        from timm.layers import get_act_layer
        from timm.models._efficientnet_blocks import SqueezeExcite
        from timm.models._efficientnet_builder import decode_arch_def, round_channels
        from timm.models.mobilenetv3 import MobileNetV3

        arch = self.validate(arch)
        model = MobileNetV3(
            block_args=decode_arch_def(self.block_strings(arch)),
            num_classes=self.num_classes if num_classes is None else num_classes,
            stem_size=make_divisible(STEM_WIDTH * self.width_mult),
            fix_stem=True,
            num_features=self._head_width(),
            head_bias=False,
            act_layer=get_act_layer("hard_swish"),
            se_layer=partial(
                SqueezeExcite, gate_layer="hard_sigmoid", force_act_layer=nn.ReLU, rd_round_fn=round_channels
            ),
            **kwargs,
        )
        return model

    def timm_config(self, arch: tuple, num_classes: int | None = None) -> dict[str, Any]:
        """Everything timm needs to build `arch` again, as JSON (model.json carries it): MobileNetV3's arguments,
        the block strings for `decode_arch_def`, and the layers by their timm names."""
        arch = self.validate(arch)
        return {
            "class": "timm.models.mobilenetv3.MobileNetV3",
            "block_args": "timm.models._efficientnet_builder.decode_arch_def(arch_def)",
            "arch_def": self.block_strings(arch),
            "num_classes": self.num_classes if num_classes is None else num_classes,
            "stem_size": make_divisible(STEM_WIDTH * self.width_mult),
            "fix_stem": True,
            "num_features": self._head_width(),
            "head_bias": False,
            "act_layer": "timm.layers.get_act_layer('hard_swish')",
            "se_layer": "functools.partial(timm.models._efficientnet_blocks.SqueezeExcite, gate_layer='hard_sigmoid', "
            "force_act_layer=torch.nn.ReLU, rd_round_fn=timm.models._efficientnet_builder.round_channels)",
            "input_size": [3, self.resolution(arch), self.resolution(arch)],
        }

    def _head_width(self) -> int:
        return make_divisible(HEAD_WIDTH * max(1.0, self.width_mult))

    def supernet(self, num_classes: int | None = None) -> nn.Module:
        """The weight-sharing supernet of this space (elastic kernel, expand ratio, depth, resolution)."""
        return OFASupernet(self, num_classes)

    def input_shape(self, arch: tuple) -> tuple[int, int, int, int]:
        r = self.resolution(self.validate(arch))
        return (1, 3, r, r)

    def operators(self, arch: tuple) -> list[Op]:
        """The operators timm builds for `arch`."""
        arch = self.validate(arch)
        r = self.resolution(arch)
        hw = _out(r, 2)
        c = make_divisible(STEM_WIDTH * self.width_mult)
        ops = [
            Op("conv", 3, c, 3, 1, r, hw, 2 * c),
            Op("conv", c, c, 3, c, hw, hw, 2 * c),
            Op("conv", c, c, 1, 1, hw, hw, 2 * c),
            Op("eltwise", c, c, in_hw=hw, out_hw=hw),
        ]
        for s, k, e, c_out, stride in self.layers(arch):
            ops.extend(block_operators(c, c_out, k, e, stride, hw, STAGE_SE[s]))
            hw, c = _out(hw, stride), c_out
        final, head = make_divisible(FINAL_WIDTH * self.width_mult), self._head_width()
        return ops + [
            Op("conv", c, final, 1, 1, hw, hw, 2 * final),
            Op("pool", final, final, hw, final, hw, 1),
            Op("conv", final, head, 1, 1, 1, 1),
            Op("linear", head, self.num_classes, extra_params=self.num_classes),
        ]
