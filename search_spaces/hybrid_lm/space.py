"""The `hybrid_lm` space, after Nemotron-Flash: stages of a repeated unit; a unit holds at most two
mixer types in a ratio (1:1, 1:2, 1:3, or 0:1, which is the second type alone), in order (`mamba2+swa`
is Mamba2 then sliding-window attention, `swa+mamba2` the reverse: they train differently), each mixer
followed by 0-2 FFNs; plus hidden size, heads and FFN ratio, under a cap on the number of blocks.

String form: `d128h4f3/attn+mamba2@1:3,f1,x2/gdn,f2,x1/-`: width, heads and FFN ratio, then per
stage the mixer (or pair and ratio), FFNs per mixer and repeats of the unit; `-` is an empty stage."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import torch

from search_spaces.base import Gene, Op, SearchSpace
from search_spaces.hybrid_lm.model import MIXERS, VOCAB, HybridLM
from search_spaces.registry import register

PAIRS = tuple(f"{a}+{b}" for a, b in itertools.permutations(MIXERS, 2))  # ordered: the first type leads each unit
RATIOS = ("1:1", "1:2", "1:3", "0:1")
_STAGE = re.compile(r"^(?P<mix>[a-z0-9]+(?:\+[a-z0-9]+)?)(?:@(?P<ratio>\d:\d))?,f(?P<ffn>\d),x(?P<repeat>\d)$")


@register("hybrid_lm")
class HybridLMSpace(SearchSpace):
    def __init__(
        self,
        dims: Sequence[int] = (96, 128, 192, 256),
        heads: Sequence[int] = (2, 4),
        ffn_ratios: Sequence[float] = (2.0, 3.0, 4.0),
        stages: int = 3,
        max_repeat: int = 2,
        max_blocks: int = 16,
        window: int = 64,
        seq_len: int = 128,
        context: int = 1024,
        latency: str = "decode",
        spec: str | None = None,
    ) -> None:
        self.spec = spec or self.name
        if any(d % h or (2 * d) % h for d in dims for h in heads):
            raise ValueError(
                f"every dim must be a multiple of every head count, but got dims={list(dims)}, heads={list(heads)}"
            )
        if max_blocks < 1 or stages < 1 or max_repeat < 1:
            raise ValueError(
                f"`stages, max_repeat, max_blocks >= 1` must hold, but got {stages}, {max_repeat}, {max_blocks}"
            )
        self.dims, self.heads, self.ffn_ratios = tuple(dims), tuple(heads), tuple(float(r) for r in ffn_ratios)
        self.stages, self.max_repeat, self.max_blocks = stages, max_repeat, max_blocks
        if latency not in ("decode", "prefill"):
            raise ValueError(f"latency must be 'decode' or 'prefill', but got {latency!r}")
        self.window, self.seq_len, self.context, self.latency = window, seq_len, context, latency
        genes = [Gene("dim", self.dims), Gene("heads", self.heads), Gene("ffn_ratio", self.ffn_ratios)]
        for s in range(stages):
            genes += [
                Gene(f"s{s}_mix", MIXERS + PAIRS),
                Gene(f"s{s}_ratio", RATIOS),
                Gene(f"s{s}_ffn", (0, 1, 2)),
                Gene(f"s{s}_repeat", tuple(range(1 if s == 0 else 0, max_repeat + 1))),
            ]
        self.genes = tuple(genes)
        self.num_classes = VOCAB

    # ---- structure -------------------------------------------------------------------------
    def _stage(self, arch: tuple, s: int) -> tuple[str, str, int, int]:
        return arch[3 + 4 * s : 7 + 4 * s]

    @staticmethod
    def unit(mix: str, ratio: str, ffn: int) -> list[str]:
        """The blocks of one stage unit."""
        a, _, b = mix.partition("+")
        if b:
            na, nb = (int(x) for x in ratio.split(":"))
            mixers = [a] * na + [b] * nb
        else:
            mixers = [a]
        return [k for m in mixers for k in [m] + ["ffn"] * ffn]

    def blocks(self, arch: tuple) -> list[str]:
        """Every block of the network in order: mixer names and "ffn"."""
        out: list[str] = []
        for s in range(self.stages):
            mix, ratio, ffn, repeat = self._stage(arch, s)
            out += self.unit(mix, ratio, ffn) * repeat
        return out

    def active(self, arch: tuple) -> list[bool]:
        mask = [True, True, any(k == "ffn" for k in self.blocks(arch))]
        for s in range(self.stages):
            mix, _, _, repeat = self._stage(arch, s)
            on = repeat > 0
            mask += [on, on and "+" in mix, on, True]
        return mask

    def canonical(self, arch: tuple) -> tuple:
        genes = list(arch)
        for s in range(self.stages):
            i = 3 + 4 * s
            if "+" in genes[i] and genes[i + 1] == "0:1":  # the second type alone
                genes[i] = genes[i].partition("+")[2]
        while len(self.blocks(tuple(genes))) > self.max_blocks:
            self._shrink(genes)
        mask = self.active(tuple(genes))
        return tuple(v if on else g.options[0] for v, on, g in zip(genes, mask, self.genes))

    def _shrink(self, genes: list[Any]) -> None:
        """One step towards the block cap, last stage first: fewer repeats, then fewer FFNs, then a
        smaller ratio, then a pair's first type alone."""
        for s in reversed(range(self.stages)):
            i = 3 + 4 * s
            if genes[i + 3] > (1 if s == 0 else 0):
                genes[i + 3] -= 1
                return
        for s in reversed(range(self.stages)):
            i = 3 + 4 * s
            if genes[i + 3] and genes[i + 2] > 0:
                genes[i + 2] -= 1
                return
        for s in reversed(range(self.stages)):
            i = 3 + 4 * s
            if genes[i + 3] and "+" in genes[i]:
                if genes[i + 1] in ("1:2", "1:3"):
                    genes[i + 1] = RATIOS[RATIOS.index(genes[i + 1]) - 1]
                else:
                    genes[i] = genes[i].partition("+")[0]
                return

    def size(self) -> int:
        """Distinct architectures within the block cap."""
        forms: list[tuple[int, bool]] = []  # (blocks, has FFN) of one stage's non-empty forms, per repeat
        for mix in MIXERS + PAIRS:
            for ratio in RATIOS[:3] if "+" in mix else RATIOS[:1]:
                for ffn in (0, 1, 2):
                    forms.append((len(self.unit(mix, ratio, ffn)), ffn > 0))
        counts = {(0, False): 1}  # (blocks so far, any FFN) -> ways
        for s in range(self.stages):
            nxt: dict[tuple[int, bool], int] = {}
            for (blocks, ffn_any), ways in counts.items():
                if s > 0:
                    nxt[blocks, ffn_any] = nxt.get((blocks, ffn_any), 0) + ways
                for unit, has_ffn in forms:
                    for repeat in range(1, self.max_repeat + 1):
                        total = blocks + unit * repeat
                        if total <= self.max_blocks:
                            key = (total, ffn_any or has_ffn)
                            nxt[key] = nxt.get(key, 0) + ways
            counts = nxt
        plain = sum(w for (_, f), w in counts.items() if not f)
        with_ffn = sum(w for (_, f), w in counts.items() if f)
        return len(self.dims) * len(self.heads) * (plain + len(self.ffn_ratios) * with_ffn)

    def neighbours(self, gene: int, value: Any) -> list[Any]:
        """A stage's mixer mutates locally: one type of a pair replaced, the pair's order swapped, or a
        type added or dropped (mamba2+deltanet -> mamba2+swa, deltanet+mamba2, mamba2, ...), so a child
        keeps half of what made its parent good; every mix is at most two such steps from any other."""
        if not self.genes[gene].name.endswith("_mix"):
            return super().neighbours(gene, value)
        a, _, b = value.partition("+")
        if not b:
            return [m for m in MIXERS if m != a] + [p for p in PAIRS if a in p.split("+")]
        return (
            [f"{x}+{b}" for x in MIXERS if x not in (a, b)]
            + [f"{a}+{y}" for y in MIXERS if y not in (a, b)]
            + [f"{b}+{a}", a, b]
        )

    # ---- strings ---------------------------------------------------------------------------
    def to_str(self, arch: tuple) -> str:
        arch = self.validate(arch)
        parts = [f"d{arch[0]}h{arch[1]}f{arch[2]:g}"]
        for s in range(self.stages):
            mix, ratio, ffn, repeat = self._stage(arch, s)
            if repeat == 0:
                parts.append("-")
            else:
                parts.append(f"{mix}{'@' + ratio if '+' in mix else ''},f{ffn},x{repeat}")
        return "/".join(parts)

    def from_str(self, s: str) -> tuple:
        parts = s.strip().split("/")
        head = re.fullmatch(r"d(\d+)h(\d+)f([\d.]+)", parts[0]) if parts else None
        if head is None or len(parts) != self.stages + 1:
            raise ValueError(
                f"hybrid_lm: {s!r} is not of the form d128h4f3/attn+mamba2@1:3,f1,x2/gdn,f2,x1/- ({self.stages} stages)"
            )
        genes: list[Any] = [int(head[1]), int(head[2]), float(head[3])]
        for part in parts[1:]:
            if part == "-":
                genes += [MIXERS[0], RATIOS[0], 0, 0]
                continue
            m = _STAGE.fullmatch(part)
            if m is None:
                raise ValueError(f"hybrid_lm: stage {part!r} of {s!r} is not of the form mix[@a:b],fN,xN")
            mix = m["mix"]
            if mix not in MIXERS + PAIRS:
                raise ValueError(f"hybrid_lm: unknown mixer {mix!r} in {s!r}; known: {', '.join(MIXERS + PAIRS)}")
            genes += [mix, m["ratio"] or RATIOS[0], int(m["ffn"]), int(m["repeat"])]
        arch = tuple(genes)
        for gene, value in zip(self.genes, arch):
            if value not in gene.options:
                raise ValueError(
                    f"hybrid_lm: gene {gene.name!r} of {s!r} must be one of {list(gene.options)}, but got {value!r}"
                )
        if len(self.blocks(arch)) > self.max_blocks:
            raise ValueError(f"hybrid_lm: {s!r} has {len(self.blocks(arch))} blocks, over the cap of {self.max_blocks}")
        return self.validate(arch)

    # ---- models ----------------------------------------------------------------------------
    def build(self, arch: tuple, **_: Any) -> HybridLM:
        arch = self.validate(arch)
        return HybridLM(self.blocks(arch), arch[0], arch[1], arch[2], self.window)

    def input_shape(self, arch: tuple) -> tuple[int, int]:
        return (1, self.seq_len)

    def latency_model(self, arch: tuple) -> tuple[torch.nn.Module, tuple[int, ...]]:
        """`latency="decode"`: one decoding step at `context` tokens (batch 1); "prefill": a forward
        pass over `seq_len` tokens."""
        if self.latency == "prefill":
            return super().latency_model(arch)
        from search_spaces.hybrid_lm.model import DecodeStep

        return DecodeStep(self.build(arch).eval(), 1, self.context), (1, 1)

    def example_input(self, arch: tuple) -> torch.Tensor:
        return torch.randint(0, VOCAB, self.input_shape(arch))

    def operators(self, arch: tuple) -> list[Op]:
        """A forward pass over `seq_len` tokens (what prefill costs); attention scores and recurrent
        state updates are "matmul" work."""
        return self._operators(arch, self.seq_len, None)

    def latency_operators(self, arch: tuple) -> list[Op]:
        """What `latency_model` times: one token against `context` cached tokens, or the prefill."""
        return self._operators(arch, 1, self.context) if self.latency == "decode" else self.operators(arch)

    def _operators(self, arch: tuple, t: int, context: int | None) -> list[Op]:
        arch = self.validate(arch)
        dim, heads, ratio = arch[0], arch[1], arch[2]
        d, kv = dim // heads, max(1, heads // 2)
        norm = Op("eltwise", dim, dim, extra_params=dim, positions=t)
        ops = [Op("eltwise", dim, dim, positions=t)]  # embedding lookup; its table is the head's weight
        for kind in self.blocks(arch):
            ops.append(norm)
            if kind == "ffn":
                hidden = int(dim * ratio)
                ops += [Op("linear", dim, 2 * hidden, positions=t), Op("linear", hidden, dim, positions=t)]
            elif kind in ("attn", "swa"):
                if context is None:  # causal over t tokens: t / 2 keys per query on average
                    span = (t + 1) // 2 if kind == "attn" else min(self.window, t)
                else:  # one query against the cache and itself
                    span = context + 1 if kind == "attn" else min(self.window, context + 1)
                ops += [
                    Op("linear", dim, dim, positions=t),
                    Op("linear", dim, 2 * kv * d, positions=t),
                    Op("matmul", d, heads * span, positions=t),
                    Op("matmul", heads * span, d, positions=t),
                    Op("linear", dim, dim, positions=t),
                ]
            elif kind == "mamba2":
                inner, n = 2 * dim, 16
                ops += [
                    Op("linear", dim, 2 * inner + 2 * n + heads, positions=t),
                    Op("matmul", 4, inner + 2 * n, extra_params=(inner + 2 * n) * 5, positions=t),  # short conv
                    Op("matmul", inner, 2 * n, extra_params=3 * heads, positions=t),  # state update and read-out
                    Op("eltwise", inner, inner, extra_params=inner, positions=t),
                    Op("linear", inner, dim, positions=t),
                ]
            else:
                gated = kind == "gdn"
                ops += [
                    Op("linear", dim, 3 * dim, positions=t),
                    Op("matmul", 4, 3 * dim, extra_params=3 * dim * 5, positions=t),
                    Op("linear", dim, heads, extra_params=heads, positions=t),
                    *([Op("linear", dim, heads, extra_params=heads, positions=t)] if gated else []),
                    Op("matmul", heads * d, 3 * d, positions=t),  # delta-rule state update and read-out
                    Op("linear", dim, dim, positions=t),
                    Op("eltwise", dim, dim, extra_params=d, positions=t),
                    Op("linear", dim, dim, positions=t),
                ]
        return ops + [norm, Op("linear", dim, VOCAB, positions=t)]
