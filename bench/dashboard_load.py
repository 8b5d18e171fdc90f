"""Time to serve a 10,000-trial study: the study page, its data, table pages, a trial and the overview.

Fills a SQLite store with one study of synthetic trials (architectures sampled from conv-small,
values from a formula, 2% failed, trials over budget pruned), serves it with uvicorn on 127.0.0.1
and times each request (median of ``--repeats`` after one warm-up request). The study data are
timed both as served (cached until the study changes) and recomputed from the store.
Run: ``.venv/bin/python bench/dashboard_load.py [--trials 10000]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.searchspace import get_space, parse_type
from archetype.store import Store

STUDY = "load-10k"
BUDGET_MS = 0.5


def fill(store: Store, trials: int, seed: int = 0) -> float:
    """Store ``trials`` synthetic trials in one study; return the seconds it took."""
    space = get_space("conv-small", parse_type("Image[1,8,8]"), 10)
    store.create_study(STUDY, space=space.name, target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                       constraints=[Constraint.parse(f"latency_ms<={BUDGET_MS}")], spec={"space": space.name})
    rng = random.Random(seed)
    sampler = np.random.default_rng(seed)
    archs = [space.sample(sampler) for _ in range(200)]
    started = time.perf_counter()
    for _ in range(trials):
        arch = rng.choice(archs)
        latency = arch.macs() / 2e6 * rng.uniform(0.8, 1.2)
        values = {"latency_ms": latency, "params": float(arch.params()), "macs": float(arch.macs())}
        if rng.random() < 0.02:
            result = Result(TrialState.FAILED, error="RuntimeError: synthetic failure")
        elif latency > BUDGET_MS:
            result = Result(TrialState.PRUNED, values)
        else:
            accuracy = min(0.99, 0.6 + 0.3 * (1 - 1 / (1 + arch.params() / 2e4)) + rng.gauss(0, 0.02))
            result = Result(TrialState.COMPLETE, {**values, "accuracy": accuracy})
        store.record_trial(STUDY, arch.to_json(), arch.key, result)
    return time.perf_counter() - started


def timed(url: str, repeats: int) -> tuple[float, float, int]:
    """(first request ms, median ms of ``repeats`` more, bytes) for GET ``url``."""
    def get() -> tuple[float, int]:
        start = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            size = len(response.read())
        return (time.perf_counter() - start) * 1000, size

    first, size = get()
    return first, statistics.median(get()[0] for _ in range(repeats)), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--db", type=Path, help="keep the filled store in this SQLite file (reused if it exists)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = args.db or Path(folder) / "load.db"
        reuse = path.exists()
        with Store.open(f"sqlite:///{path}") as store:
            if reuse:
                print(f"reusing {path}: {len(store.trials(STUDY))} trials")
            else:
                seconds = fill(store, args.trials)
                rate = args.trials / seconds
                print(f"filled {args.trials} trials in {seconds:.1f} s ({rate:.0f} trials/s via Store.record_trial)")
            serve_and_time(store, args.repeats, args.trials)


def serve_and_time(store: Store, repeats: int, trials: int) -> None:
    """Serve ``store`` with uvicorn and print the time of each request."""
    import uvicorn

    from archetype.dashboard import queries
    from archetype.dashboard.app import create_app

    config = uvicorn.Config(create_app(store), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    requests = [
        ("study page (HTML)", f"/studies/{STUDY}"),
        ("study data: points, front, progress", f"/api/studies/{STUDY}"),
        ("trials table, first page", f"/api/studies/{STUDY}/trials"),
        ("trials table, by accuracy, page 100",
         f"/api/studies/{STUDY}/trials?sort=accuracy&order=desc&offset=5000"),
        ("trials table, within budget", f"/api/studies/{STUDY}/trials?budget=within&sort=latency_ms"),
        ("trial (architecture SVG)", f"/api/studies/{STUDY}/trials/{trials // 2}"),
        ("studies overview", "/api/studies"),
        ("plotly.min.js", "/static/plotly.min.js"),
    ]
    print(f"\n{'request':<40} {'first ms':>9} {'median ms':>10} {'KB':>8}")
    for label, path in requests:
        first, median, size = timed(base + path, repeats)
        print(f"{label:<40} {first:>9.1f} {median:>10.1f} {size / 1024:>8.0f}")
    recompute = []
    for _ in range(3):
        start = time.perf_counter()
        view = queries.study_view(store, STUDY)
        recompute.append((time.perf_counter() - start) * 1000)
    print(f"{'study data recomputed (no cache)':<40} {'':>9} {statistics.median(recompute):>10.1f}")
    print(f"\n{len(view.points)} points, {len(view.front)} on the front, {len(view.progress)} progress steps")
    server.should_exit = True
    thread.join(timeout=10)


if __name__ == "__main__":
    main()
