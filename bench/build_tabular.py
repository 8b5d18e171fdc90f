"""Rebuild the tabular benchmark: train and time every architecture of ``tabular_space()`` on digits.

Each architecture is trained for ``--epochs`` epochs (seed fixed) and scored on the
validation split; latency is measured on ``--target`` (default ``cpu-torch``: eager
PyTorch, which skips the ONNX export that costs seconds per model) with 1 thread by
the project's one protocol. Rows are appended to a ``.partial.jsonl`` file as they come, so an
interrupted build resumes; the table is written whole at the end.

On a shared machine other processes only ever add time to a measurement, so a
latency pass then measures every architecture ``--latency-rounds`` more times,
round-robin (each round minutes apart from the last), and keeps the smallest
median of all its measurements. A table that exists already is re-measured only.
Run: ``.venv/bin/python bench/build_tabular.py [--epochs 3] [--target cpu-torch] [--latency-rounds 3]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import time
from pathlib import Path

import torch

from archetype.runtime.measure import MeasureProtocol
from archetype.runtime.targets import get_target
from archetype.runtime.training import TrainConfig
from archetype.worker.evaluator import Budget, TrainingEvaluator
from archetype.worker.tabular import enumerate_space, tabular_space, write_table

CHECKOUT_TABLE = Path(__file__).resolve().parents[1] / "worker" / "tables" / "digits-tabular.json.gz"
"""The packaged digits table in this checkout, rewritten in place (``archetype.worker.tabular.DEFAULT_TABLE``)."""

KEPT = ("accuracy", "latency_ms", "latency_spread", "params", "macs", "size_mb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--target", default="cpu-torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=CHECKOUT_TABLE)
    parser.add_argument("--limit", type=int, default=None, help="only the first N architectures (a quick check)")
    parser.add_argument("--latency-rounds", type=int, default=3, help="more latency measurements per architecture")
    args = parser.parse_args()

    torch.set_num_threads(1)
    space = tabular_space()
    archs = list(enumerate_space(space))[: args.limit]
    protocol = MeasureProtocol(warmup=20, blocks=5, min_block_ms=10.0, max_spread=0.1, retries=1)
    evaluator = TrainingEvaluator(
        "digits", args.target, seed=args.seed, train=TrainConfig(seed=args.seed), threads=1, protocol=protocol
    )
    partial = args.out.with_name(args.out.name.replace(".json.gz", ".partial.jsonl"))
    partial.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    if args.out.exists():
        with gzip.open(args.out, "rt") as f:
            done = {row["key"]: row for row in json.load(f)["rows"]}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    print(f"{len(archs)} architectures in '{space.name}', {len(done)} already measured")
    start = time.perf_counter()
    with partial.open("a") as log:
        for i, arch in enumerate(archs):
            if arch.key in done:
                continue
            result = evaluator.evaluate(arch, Budget(args.epochs))
            if result.error:
                print(f"  {arch.key}: {result.state.value}: {result.error}")
            row = {"key": arch.key, "arch": arch.to_json(), "values": {k: result.values[k] for k in KEPT}}
            done[arch.key] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            if (i + 1) % 20 == 0:
                elapsed = time.perf_counter() - start
                print(f"  {i + 1}/{len(archs)}  {elapsed:.0f} s")
    rows = [done[a.key] for a in archs]
    target = get_target(args.target, threads=1, protocol=protocol)
    for round_ in range(args.latency_rounds):
        for arch in archs:
            values = done[arch.key]["values"]
            if values.get("latency_rounds", 0) > round_:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                model = arch.build()
            latency = target.measure(model, arch.input)
            if latency.median_ms < values["latency_ms"]:
                values["latency_ms"], values["latency_spread"] = latency.median_ms, latency.spread
            values["latency_rounds"] = round_ + 1
        print(f"  latency round {round_ + 1}/{args.latency_rounds}  {time.perf_counter() - start:.0f} s")
    meta = {
        "space": space.name,
        "data": "digits",
        "epochs": args.epochs,
        "seed": args.seed,
        "target": args.target,
        "threads": 1,
        "measure": {"warmup": protocol.warmup, "blocks": protocol.blocks, "min_block_ms": protocol.min_block_ms,
                    "latency": f"smallest median of {1 + args.latency_rounds} measurements"},
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_table(args.out, rows, meta)
    partial.unlink(missing_ok=True)
    print(f"wrote {len(rows)} rows to {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
