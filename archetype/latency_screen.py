"""LatencyScreen: a candidate whose predicted latency is far over the budget is pruned before it is trained or timed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from archetype.errors import SpecError
from archetype.latency_predictor import LatencyPredictor
from archetype.latency_tables import LatencyTable
from archetype.result import Result, TrialState
from archetype.runtime.targets import get_target
from archetype.searchspace.architecture import Architecture
from archetype.searchspace.space import SearchSpace
from archetype.store import Store


@dataclass(frozen=True)
class LatencyScreen:
    """Prunes an architecture whose ``predict``-ed latency exceeds ``budget_ms`` by more than ``margin``."""

    predict: Callable[[Architecture], float | None]
    budget_ms: float
    margin: float = 0.2

    @property
    def limit_ms(self) -> float:
        """The predicted latency above which a candidate is pruned."""
        return self.budget_ms * (1.0 + self.margin)

    def verdict(self, arch: Architecture) -> Result | None:
        """A PRUNED result when ``arch`` cannot meet the budget by prediction; None when it must be evaluated."""
        predicted = self.predict(arch)
        if predicted is None or predicted <= self.limit_ms:
            return None
        return Result(
            TrialState.PRUNED,
            values={"predicted_latency_ms": predicted, "params": float(arch.params()), "macs": float(arch.macs())},
            error=f"predicted latency_ms {predicted:.3g} > budget {self.budget_ms:g} + {self.margin:.0%}: "
            "not trained or measured",
        )


def open_latency_screen(
    store: Store,
    space: SearchSpace,
    target: str,
    budget_ms: float | None,
    *,
    margin: float = 0.2,
    required: bool | None = None,
    seed: int = 0,
) -> LatencyScreen | None:
    """The screen of a search, or None: ``required`` None screens when a latency table covers the space.

    ``required`` True screens with whatever the table holds (architectures with
    an instance not in it are evaluated) and refuses a target with no table.
    """
    if budget_ms is None or required is False:
        return None
    table = LatencyTable(store, get_target(target))
    if required is None and not table.covers(space):
        return None
    if required and not table.has_overhead():
        raise SpecError(
            f"no latency table for target {target!r} on this machine; "
            f"run: archetype latency build --space {space.name} --target {target}"
        )
    return LatencyScreen(LatencyPredictor(table, space, seed).fit_stored(), budget_ms, margin)
