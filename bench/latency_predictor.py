"""Latency prediction per predefined space: table build time, fixed overhead, and the share predicted within ±10%.

For each space: build its latency table on the target (every operator instance
measured alone, or a seeded sample of ``--max-instances``; instances the drawn
architectures need are then measured on demand), measure ``-n`` random
architectures, and report the share the table alone and the table with the
learned correction (5-fold hold-out) predict within ±10% of the measurement, the
figure ``archetype latency check`` prints. Run:
``.venv/bin/python bench/latency_predictor.py [-n 200] [--spaces conv-small mobile]``.
The protocol defaults to the project's; ``--blocks``, ``--min-block-ms`` and
``--retries`` shorten it (warm-up stays at 20 runs) where a full run takes too long.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from archetype.searchspace import get_space, list_spaces
from archetype.store import Store
from archetype.worker.data import load_dataset
from archetype.worker.latency_predictor import check_predictions
from archetype.worker.latency_table import LatencyTable
from archetype.worker.measure import MeasureProtocol
from archetype.worker.targets import get_target


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
    args = parser.parse_args()
    data = load_dataset(args.data)
    protocol = MeasureProtocol(blocks=args.blocks, min_block_ms=args.min_block_ms, retries=args.retries)
    target = get_target(args.target, protocol=protocol)
    folder = tempfile.TemporaryDirectory()
    with folder, Store.open(args.storage or f"sqlite:///{Path(folder.name) / 'bench.db'}") as store:
        rows = []
        for name in args.spaces:
            space = get_space(name, data.input_type, data.num_classes)
            table = LatencyTable(store, target)
            start = time.perf_counter()
            build = table.build(space, max_instances=args.max_instances)
            build_s = time.perf_counter() - start
            check = check_predictions(table, space, args.n)
            rows.append((name, build, build_s, check))
            print(f"{name}: built in {build_s:.0f} s, checked in {check.seconds:.0f} s", flush=True)
    print(f"\ntarget {target.name}, {target.threads} thread, data {args.data}, "
          f"{args.n} random architectures per space; {protocol}")
    print(f"{'space':<11} {'instances':>9} {'failed':>6} {'build s':>8} {'s/inst':>7} {'overhead ms':>11} "
          f"{'archs':>5} {'+on demand':>10} {'table ±10%':>10} {'+learned ±10%':>13} {'med err tbl':>11} "
          f"{'med err lrn':>11}")
    for name, build, build_s, check in rows:
        capped = f"/{build.capped_from}" if build.capped_from else ""
        per = build_s / max(build.measured, 1)
        print(f"{name:<11} {f'{build.instances}{capped}':>9} {len(build.failed):>6} {build_s:>8.0f} {per:>7.2f} "
              f"{check.overhead_ms:>11.4f} {check.architectures:>5} {check.instances_measured:>10} "
              f"{check.within_table:>10.1%} {check.within_predictor:>13.1%} {check.median_error_table:>11.1%} "
              f"{check.median_error_predictor:>11.1%}")


if __name__ == "__main__":
    main()
