"""Store throughput on SQLite and PostgreSQL: trials written and read per second, and listing a 100,000-trial study.

    .venv/bin/python bench/store_throughput.py [--trials 1000] [--large 100000] [--postgres URL]

Without --postgres a throwaway PostgreSQL server is started from the distribution's server binaries
(tests/postgres_server.py) with fsync off, so its write figures are an upper bound for a real server.
SQLite writes a file in a temporary folder (WAL, synchronous=NORMAL, as the store opens it).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.result import Result, TrialState
from archetype.store import Store

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from postgres_server import PostgresServer

ARCH = {"input": "Image[1,8,8]", "slots": [{"slot": f"s{i}", "op": "conv_bn_act", "params": {"width": 16}}
                                          for i in range(6)]}


def _result(i: int) -> Result:
    return Result(TrialState.COMPLETE, {"accuracy": (i % 97) / 97, "latency_ms": 0.05 + (i % 13) / 100,
                                        "params": 12345.0, "macs": 67890.0, "size_mb": 0.05},
                  timings={"train": 1.0, "measure": 0.5}, target="cpu-ort", fingerprint={"cpu": "x86_64"})


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(url: str, trials: int, large: int) -> dict[str, float]:
    """The figures of one backend."""
    figures: dict[str, float] = {}
    with Store.open(url) as store:
        for name in ("small", "large"):
            store.create_study(name, space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                               constraints=(), spec={})
        seconds = _timed(lambda: [store.record_trial("small", ARCH, f"{i:016d}", _result(i)) for i in range(trials)])
        figures["record_trial (trials/s)"] = trials / seconds

        def start_and_finish() -> None:
            for i in range(trials // 2):
                started = store.start_trial("small", ARCH, f"{i:016d}")
                store.finish_trial(started.id, _result(i))

        figures["start+finish (trials/s)"] = (trials // 2) / _timed(start_and_finish)
        total = trials + trials // 2
        numbers = random.Random(0).choices(range(1, total + 1), k=min(trials, 500))
        figures["trial() reads (trials/s)"] = len(numbers) / _timed(lambda: [store.trial("small", n) for n in numbers])
        figures[f"trials() of {total} (trials/s)"] = total / _timed(lambda: store.trials("small"))

        figures[f"bulk write of {large} (trials/s)"] = large / _timed(
            lambda: store.record_trials("large", ((ARCH, f"{i:016d}", _result(i)) for i in range(large)))
        )
        listed: list[object] = []
        figures[f"list {large}-trial study (s)"] = _timed(lambda: listed.extend(store.trials("large")))
        assert len(listed) == large
        figures["list_studies (s)"] = _timed(store.list_studies)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials written one at a time (default 1000)")
    parser.add_argument("--large", type=int, default=100_000, help="trials in the study listed (default 100000)")
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database instead of a throwaway one")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="arc-bench-") as folder:
        print(f"sqlite: {args.trials} trials one by one, {args.large} in bulk ...", file=sys.stderr)
        results["sqlite"] = measure(f"sqlite:///{Path(folder) / 'bench.db'}", args.trials, args.large)
    print(f"postgresql: {args.trials} trials one by one, {args.large} in bulk ...", file=sys.stderr)
    if args.postgres:
        results["postgresql"] = measure(args.postgres, args.trials, args.large)
    else:
        with PostgresServer() as server:
            results["postgresql"] = measure(server.create_database("bench"), args.trials, args.large)
    rows = list(results["sqlite"])
    width = max(map(len, rows))
    print(f"{'figure':<{width}}  {'sqlite':>12}  {'postgresql':>12}")
    for row in rows:
        print(f"{row:<{width}}  {results['sqlite'][row]:>12.2f}  {results['postgresql'][row]:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
