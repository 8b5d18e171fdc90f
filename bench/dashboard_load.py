"""Time to serve a study page of a 10,000-trial study uncached, and to list a 100,000-trial study.

Builds SQLite stores once (``--db-dir`` keeps them): one study of ``--trials`` synthetic trials and one of
``--large`` (architectures sampled from conv-small, nearly all distinct; values from a formula; 2% failed;
trials over the latency budget pruned). Then:

* serves the first with ``archetype dashboard`` (a subprocess, as a user runs it) and times each request a
  study page makes: the page, the study data and the first page of the trials table (plus a sorted page,
  a trial and the overview). The study data are cached until the study changes, so before every timed
  request the bench touches the study (``Store.set_study_status``): each time is a recomputation;
* times listing the large study through ``Store.trials`` and through ``archetype show --json``.

Only public APIs and the CLI are used, so the same file runs against an older checkout: run it there with
``--out before.json``, here with ``--compare before.json`` to print both side by side. Keep a separate
``--db-dir`` per checkout (a newer schema is not read by older code).

    .venv/bin/python bench/dashboard_load.py [--trials 10000] [--large 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.searchspace import get_space, parse_type
from archetype.store import Store

STUDY = "load"
BUDGET_MS = 0.5


def synthetic_trials(count: int, seed: int = 0) -> Iterator[tuple[dict[str, Any], str, Result]]:
    """``count`` trials ``(arch, arch_key, result)`` of conv-small, each architecture sampled afresh."""
    space = get_space("conv-small", parse_type("Image[1,8,8]"), 10)
    rng = random.Random(seed)
    sampler = np.random.default_rng(seed)
    for _ in range(count):
        arch = space.sample(sampler)
        latency = arch.macs() / 2e6 * rng.uniform(0.8, 1.2)
        values = {"latency_ms": latency, "params": float(arch.params()), "macs": float(arch.macs())}
        timings = {"train": rng.uniform(5, 20), "measure": rng.uniform(0.5, 2)}
        if rng.random() < 0.02:
            result = Result(TrialState.FAILED, error="RuntimeError: synthetic failure", timings=timings)
        elif latency > BUDGET_MS:
            result = Result(TrialState.PRUNED, values, timings=timings)
        else:
            accuracy = min(0.99, 0.6 + 0.3 * (1 - 1 / (1 + arch.params() / 2e4)) + rng.gauss(0, 0.02))
            result = Result(TrialState.COMPLETE, {**values, "accuracy": accuracy}, timings=timings)
        yield arch.to_json(), arch.key, result


def filled(path: Path, trials: int) -> str:
    """The URL of a SQLite store at ``path`` holding study ``load`` of ``trials`` trials (built if missing)."""
    url = f"sqlite:///{path}"
    if path.exists():
        print(f"reusing {path}", file=sys.stderr)
        return url
    started = time.perf_counter()
    with Store.open(url) as store:
        store.create_study(STUDY, space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=[Constraint.parse(f"latency_ms<={BUDGET_MS}")], spec={"space": "conv-small"})
        store.record_trials(STUDY, synthetic_trials(trials))
    print(f"built {path} ({trials} trials) in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return url


def median_ms(action: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> float:
    """Median milliseconds of ``action`` over ``repeats`` runs after one warm-up, ``before`` run untimed first."""
    times = []
    for _ in range(repeats + 1):
        if before is not None:
            before()
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:])


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def archetype(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "archetype", *args], **kwargs)


def dashboard_times(url: str, trials: int, repeats: int) -> dict[str, float]:
    """Median ms of each request of a study page, the study changed before each so that nothing is cached."""
    port = free_port()
    server = archetype("dashboard", "--storage", url, "--port", str(port), stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/api/studies")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the dashboard did not start") from None
                time.sleep(0.2)
        requests = {
            "study page (HTML)": f"/studies/{STUDY}",
            "study data (points, front, progress)": f"/api/studies/{STUDY}",
            "trials table, first page": f"/api/studies/{STUDY}/trials",
            "trials table, by accuracy, middle page": f"/api/studies/{STUDY}/trials?sort=accuracy&order=desc"
                                                     f"&offset={trials // 2}",
            "trials table, within budget": f"/api/studies/{STUDY}/trials?budget=within&sort=latency_ms",
            "trial (architecture SVG)": f"/api/studies/{STUDY}/trials/{trials // 2}",
            "studies overview": "/api/studies",
        }
        with Store.open(url) as store:
            def touch() -> None:
                store.set_study_status(STUDY, "complete")

            figures = {label: median_ms(lambda path=path: get(base + path), repeats, touch)
                       for label, path in requests.items()}
            page = ("study page (HTML)", "study data (points, front, progress)", "trials table, first page")
            figures["a study page: its three requests"] = sum(figures[label] for label in page)
            size = len(get(base + requests["study data (points, front, progress)"]))
            print(f"study data: {size / 1024:.0f} KB", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return figures


def listing_times(url: str, repeats: int) -> dict[str, float]:
    """Median ms to list every trial of the study through the store API and through ``archetype show --json``."""
    with Store.open(url) as store:
        count = len(store.trials(STUDY))
        figures = {f"Store.trials, all {count}": median_ms(lambda: store.trials(STUDY), repeats)}

    def show() -> None:
        with tempfile.TemporaryFile() as out:
            shown = archetype("show", STUDY, "--storage", url, "--json", stdout=out, stderr=subprocess.DEVNULL)
            if shown.wait() != 0:
                raise RuntimeError("archetype show failed")
            out.seek(0)
            listed = len(json.load(out)["trials"])
            if listed != count:
                raise RuntimeError(f"archetype show listed {listed} of {count} trials")

    figures[f"archetype show --json, all {count} (process)"] = median_ms(show, max(1, repeats // 3))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000, help="trials of the study served (default 10000)")
    parser.add_argument("--large", type=int, default=100_000, help="trials of the study listed (default 100000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each request (default 7)")
    parser.add_argument("--db-dir", type=Path, help="keep the stores in this folder (reused if there)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    parser.add_argument("--compare", type=Path, help="a --out file of another checkout, printed alongside")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.db_dir or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        served = filled(folder / f"served-{args.trials}.db", args.trials)
        listed = filled(folder / f"listed-{args.large}.db", args.large)
        figures = dashboard_times(served, args.trials, args.repeats) | listing_times(listed, args.repeats)

    other = json.loads(args.compare.read_text()) if args.compare else {}
    try:
        from archetype.runtime.targets import cpu_description
    except ImportError:  # a checkout from before the runtime room, timed for --compare
        cpu = "CPU not read"
    else:
        cpu = cpu_description()
    print(f"{args.trials}-trial study served, {args.large}-trial study listed; median of {args.repeats}; "
          f"{cpu}, {os.cpu_count()} cores")
    header = f"{'':<48} {'ms':>10}" + (f" {'compared':>10} {'ratio':>7}" if other else "")
    print(header)
    for label, value in figures.items():
        row = f"{label:<48} {value:>10.1f}"
        if label in other:
            row += f" {other[label]:>10.1f} {other[label] / value:>6.1f}x"
        print(row)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    print("next: compare with another checkout: bench/dashboard_load.py --compare FILE", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
