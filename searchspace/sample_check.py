"""Sample a space and prove each architecture: type-check, build, and run a forward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from archetype.errors import ArchetypeError
from archetype.searchspace.space import SearchSpace


@dataclass
class SampleCheck:
    """What sampling ``n`` architectures of a space found."""

    space: str
    sampled: int = 0
    unique: int = 0
    built: int = 0
    ran: int = 0
    params: list[int] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    operators: dict[str, int] = field(default_factory=dict)  # how often each operator was drawn
    failures: list[str] = field(default_factory=list)  # "key: error" for each architecture that failed

    def to_json(self) -> dict:
        def stats(values: list[int]) -> dict[str, float]:
            return {"min": min(values), "median": float(np.median(values)), "max": max(values)} if values else {}

        return {
            "space": self.space, "sampled": self.sampled, "unique": self.unique, "built": self.built,
            "ran": self.ran, "params": stats(self.params), "macs": stats(self.macs),
            "operators": dict(sorted(self.operators.items())), "failures": self.failures,
        }


def check_samples(
    space: SearchSpace,
    n: int,
    seed: int = 0,
    run: bool = True,
    on_sample: Callable[[], None] | None = None,
) -> SampleCheck:
    """Draw ``n`` architectures; build each and, with ``run``, pass a batch of two through it."""
    rng = np.random.default_rng(seed)
    report = SampleCheck(space.name)
    keys = set()
    for _ in range(n):
        arch = space.sample(rng)  # only well-typed architectures come out; SpecError if none can
        report.sampled += 1
        keys.add(arch.key)
        for choice in arch.choices:
            report.operators[choice.op] = report.operators.get(choice.op, 0) + 1
        try:
            model = arch.build()
            report.built += 1
            report.params.append(arch.params())
            report.macs.append(arch.macs())
            if run:
                with torch.no_grad():
                    out = model.eval()(torch.randn(arch.input.shape(batch=2)))
                expected = arch.typing()[-1].output.shape(batch=2)
                if tuple(out.shape) != expected:
                    raise ArchetypeError(f"output shape {tuple(out.shape)} differs from the inferred {expected}")
                report.ran += 1
        except Exception as exc:
            report.failures.append(f"{arch.key}: {type(exc).__name__}: {exc}".splitlines()[0])
        if on_sample is not None:
            on_sample()
    report.unique = len(keys)
    return report
