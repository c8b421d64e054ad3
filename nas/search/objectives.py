"""What a search optimises: a hard latency budget, a MnasNet-style soft reward, or the whole front."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("budget", "soft", "pareto")
INFEASIBLE = -1e6  # the budget objective's value for an arch over budget, less latency / budget


@dataclass(frozen=True)
class Objective:
    """`budget`: the most accurate arch with latency <= budget_ms (infeasible archs rank below every
    feasible one of accuracy above -1e6, the faster the better). `soft`: accuracy * (latency / budget_ms) ** w,
    MnasNet's reward (w = -0.07; accuracy >= 0). `pareto`: maximise accuracy and minimise latency together."""

    kind: str = "budget"
    budget_ms: float | None = None
    w: float = -0.07

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective must be one of {', '.join(KINDS)}, but got {self.kind!r}")
        if self.kind != "pareto" and not (self.budget_ms and self.budget_ms > 0):
            raise ValueError(f"objective {self.kind!r} needs a positive budget_ms, but got {self.budget_ms!r}")

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.kind == "pareto" else ["maximize"]

    def values(self, accuracy: float, latency_ms: float) -> list[float]:
        if self.kind == "pareto":
            return [accuracy, latency_ms]
        if self.kind == "soft":
            if not accuracy >= 0:
                raise ValueError(f"objective 'soft' needs accuracy >= 0, but got {accuracy!r}")
            return [accuracy * (latency_ms / self.budget_ms) ** self.w]
        return [accuracy if latency_ms <= self.budget_ms else INFEASIBLE - latency_ms / self.budget_ms]

    def feasible(self, latency_ms: float) -> bool:
        return self.budget_ms is None or latency_ms <= self.budget_ms
