"""Latency prediction per predefined space: table build time, fixed overhead, and the share predicted within ±10%.

For each space: build its latency table on the target (every operator instance
measured alone, or a seeded sample of ``--max-instances``; instances the drawn
architectures need are then measured on demand), measure ``-n`` random
architectures, and report the share the table alone and the table with the
learned correction (5-fold hold-out) predict within ±10% of the measurement, the
figure ``archetype latency check`` prints. Architectures the predictor misses
by more than ±10% are measured once more (the lower latency kept) before the
final hold-out, and the output says how many still miss and how many of those
have a noisy measurement of their own. Beside it stands the ceiling: the same
``--retest`` architectures timed twice, each time in a fresh process, and the
share whose two latencies agree within ±10%; no predictor can beat the
measurement it is scored against. Run:
``.venv/bin/python bench/latency_predictor.py [-n 200] [--retest 200] [--spaces conv-small mobile]``.
The protocol defaults to the project's; ``--blocks``, ``--min-block-ms`` and
``--retries`` shorten it (warm-up stays at 20 runs) where a full run takes too long.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from archetype.latency_predictor import check_predictions, draw_architectures, measure_architecture
from archetype.latency_tables import LatencyTable
from archetype.runtime.data import load_dataset
from archetype.runtime.measure import MeasureProtocol
from archetype.runtime.targets import get_target
from archetype.searchspace import get_space, list_spaces
from archetype.store import Store


def measure_once(args: argparse.Namespace, target: object) -> None:
    """Child process of the retest: time the drawn architectures of one space, write {key: ms} as JSON."""
    data = load_dataset(args.data)
    space = get_space(args.measure_once, data.input_type, data.num_classes)
    found = {}
    for arch in draw_architectures(space, args.retest, seed=1):
        latency = measure_architecture(target, arch)
        if latency is not None:
            found[arch.key] = latency.median_ms
    Path(args.out).write_text(json.dumps(found))


def retest_share(args: argparse.Namespace, space: str, folder: Path) -> tuple[float, int]:
    """Share of ``--retest`` architectures whose latencies from two fresh processes agree within ±10%."""
    runs = []
    for k in (1, 2):
        out = folder / f"{space}-{k}.json"
        command = [sys.executable, __file__, "--measure-once", space, "--out", str(out), "--retest", str(args.retest),
                   "--target", args.target, "--data", args.data, "--blocks", str(args.blocks),
                   "--min-block-ms", str(args.min_block_ms), "--retries", str(args.retries)]
        subprocess.run(command, check=True)
        runs.append(json.loads(out.read_text()))
    both = sorted(set(runs[0]) & set(runs[1]))
    first, second = (np.array([r[k] for k in both]) for r in runs)
    return (float(np.mean(np.abs(second / first - 1.0) <= 0.10)) if both else float("nan")), len(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="architectures measured per space")
    parser.add_argument("--spaces", nargs="+", default=list_spaces())
    parser.add_argument("--target", default="cpu-ort")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--max-instances", type=int, default=None, help="cap on the instances a build measures")
    parser.add_argument("--storage", help="keep the tables in this store (default: a temporary SQLite file)")
    parser.add_argument("--blocks", type=int, default=MeasureProtocol.blocks)
    parser.add_argument("--min-block-ms", type=float, default=MeasureProtocol.min_block_ms)
    parser.add_argument("--retries", type=int, default=MeasureProtocol.retries)
    parser.add_argument("--retest", type=int, default=200, help="architectures timed twice for the noise ceiling "
                        "(0: skip)")
    parser.add_argument("--measure-once", metavar="SPACE", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    protocol = MeasureProtocol(blocks=args.blocks, min_block_ms=args.min_block_ms, retries=args.retries)
    target = get_target(args.target, protocol=protocol)
    if args.measure_once:
        measure_once(args, target)
        return
    data = load_dataset(args.data)
    folder = tempfile.TemporaryDirectory()
    with folder, Store.open(args.storage or f"sqlite:///{Path(folder.name) / 'bench.db'}") as store:
        rows = []
        for name in args.spaces:
            space = get_space(name, data.input_type, data.num_classes)
            table = LatencyTable(store, target)
            start = time.perf_counter()
            build = table.build(space, max_instances=args.max_instances)
            build_s = time.perf_counter() - start
            check = check_predictions(table, space, args.n, remeasure_outliers=True)
            ceiling, pairs = retest_share(args, name, Path(folder.name)) if args.retest else (float("nan"), 0)
            rows.append((name, build, build_s, check, ceiling, pairs))
            print(f"{name}: built in {build_s:.0f} s, checked in {check.seconds:.0f} s", flush=True)
    print(f"\ntarget {target.name}, {target.threads} thread, data {args.data}, "
          f"{args.n} random architectures per space; {protocol}")
    print(f"{'space':<11} {'instances':>9} {'failed':>6} {'build s':>8} {'s/inst':>7} {'overhead ms':>11} "
          f"{'archs':>5} {'+on demand':>10} {'table ±10%':>10} {'+learned ±10%':>13} {'med err tbl':>11} "
          f"{'med err lrn':>11} {'retest ±10%':>11} {'gap':>6}  outside ±10% (noisy, re-measured)")
    for name, build, build_s, check, ceiling, pairs in rows:
        capped = f"/{build.capped_from}" if build.capped_from else ""
        per = build_s / max(build.measured, 1)
        print(f"{name:<11} {f'{build.instances}{capped}':>9} {len(build.failed):>6} {build_s:>8.0f} {per:>7.2f} "
              f"{check.overhead_ms:>11.4f} {check.architectures:>5} {check.instances_measured:>10} "
              f"{check.within_table:>10.1%} {check.within_predictor:>13.1%} {check.median_error_table:>11.1%} "
              f"{check.median_error_predictor:>11.1%} {ceiling:>11.1%} {ceiling - check.within_predictor:>+6.1%}  "
              f"{check.outside}/{check.architectures} ({check.outside_noisy} noisy, {check.remeasured} re-measured; "
              f"retest on {pairs})")
    print("outside: missed by more than ±10% after re-measuring; noisy: its own measurement's block spread over 5%, "
          "the rest are the predictor's error; gap: retest ceiling minus the learned share", file=sys.stderr)


if __name__ == "__main__":
    main()
