"""Learned latency predictors on published device tables, with BRP-NAS's protocol, per device column.

For every ``latency_ms_<device>`` column of each table (default: the shared
NB201 CSV and FBNet JSON): train on ``--train`` random architectures (900) and on
``--small`` (100), validate on ``--val`` (100) to choose the model family, test on
all the rest; and fit from ``--shots`` (20) with transfer from the table's other
devices. Prints, per device and setting, the share of test architectures within
±10% and ±5% of the measured latency, Spearman's rho and the fit time, as means
over ``--seeds``; for a device measured in whole milliseconds, the share that the
rounding alone leaves reachable. With ``--learnable``, also the share that
gradient boosting reaches when trained on 90% of the table and tested on the
other 10%: what the architecture explains of the device's numbers at all. Where
that stays under a goal, the rest of the error is the measurements' own noise, and
no predictor trained on 900 of them can close it. Any CSV of the same layout (an
NB201 ``arch`` column and ``latency_ms_<device>`` columns) can be given. Run:
``.venv/bin/python bench/latency_devices.py [FILE ...] [--train 900] [--seeds 5] [--models gbdt,gcn] [--learnable]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from archetype.errors import SpecError
from archetype.worker.latency_features import featurizer_for
from archetype.worker.latency_learned import (
    LEARNED_MODELS,
    TransferLatencyPredictor,
    fit_learned_predictor,
    make_model,
    share_within,
    spearman,
    table_source,
    usable_latencies,
)
from archetype.worker.published_table import PublishedTable, load_published_table, shared_benchmarks_dir


def rounding_ceiling(measured: np.ndarray) -> float:
    """The share within ±10% a perfect predictor reaches against latencies rounded to whole ms (true value uniform
    within ±0.5 ms of the rounded one)."""
    return float(np.mean(np.clip(0.2 * measured, 0.0, 1.0)))


def whole_ms(values: np.ndarray) -> bool:
    """Whether a device's latencies are all whole milliseconds."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(finite == np.round(finite)))


def learnable_share(y: np.ndarray, usable: np.ndarray, feats: list, seed: int = 0) -> tuple[float, float]:
    """Share within ±10% and Spearman's rho of gradient boosting trained on 90% of the usable rows, tested on the
    rest: how much of the device's latency the architecture explains, given nearly all of the table."""
    order = np.random.default_rng(seed).permutation(usable)
    cut = int(0.9 * len(order))
    train, test = order[:cut], order[cut:]
    model = make_model("gbdt", seed).fit([feats[i] for i in train], np.log(y[train]))
    predicted = np.exp(model.predict([feats[i] for i in test]))
    return share_within(predicted, y[test]), spearman(predicted, y[test])


def _score(predicted: np.ndarray, measured: np.ndarray, seconds: float) -> np.ndarray:
    return np.array([share_within(predicted, measured), share_within(predicted, measured, 0.05),
                     spearman(predicted, measured), seconds])


def _misses(predicted: np.ndarray, measured: np.ndarray) -> str:
    """Where the misses of ±10% lie: their share among the fastest quarter of test architectures."""
    miss = np.abs(predicted / measured - 1.0) > 0.10
    if not miss.any():
        return "no misses"
    fast = measured <= np.quantile(measured, 0.25)
    over = np.mean(predicted[miss] > measured[miss])
    return (f"{miss.sum()} misses, {np.mean(fast[miss]):.0%} in the fastest quarter (<= "
            f"{np.quantile(measured, 0.25):.3g} ms), {over:.0%} over-predicted")


def bench_device(table: PublishedTable, device: str, feats: list, args: argparse.Namespace) -> dict[str, object]:
    """The three settings' mean scores on one device column."""
    y = table.column(device)
    usable = np.flatnonzero(usable_latencies(y))
    others = {d: table.column(d) for d in table.devices() if d != device}
    settings = {f"{args.train}": [], f"{args.small}": [], f"{args.shots}+T": []}
    note = ""
    for seed in range(args.seeds):
        order = np.random.default_rng(seed).permutation(usable)
        val = order[args.train: args.train + args.val]
        test = order[args.train + args.val:]
        for size in (args.train, args.small):
            train = order[:size]
            fitted = fit_learned_predictor(
                featurizer_for(table.space), [feats[i] for i in train], y[train],
                validation_items=[feats[i] for i in val], validation_ms=y[val],
                models=args.models, seed=seed, features=lambda f: f)
            predicted = fitted.predict_features([feats[i] for i in test])
            settings[str(size)].append(_score(predicted, y[test], fitted.fit_seconds))
            if size == args.train and seed == 0:
                note = f"{fitted.name}; {_misses(predicted, y[test])}"
        if others:
            shots = order[: args.shots]
            transfer = TransferLatencyPredictor(table_source(others, int), list(others)).fit(list(shots), y[shots])
            predicted = transfer.predict_ms(list(test))
            settings[f"{args.shots}+T"].append(_score(predicted, y[test], transfer.fit_seconds))
    means = {k: np.mean(v, axis=0) if v else np.full(4, np.nan) for k, v in settings.items()}
    test_all = np.random.default_rng(0).permutation(usable)[args.train + args.val:]
    ceiling = rounding_ceiling(y[test_all]) if whole_ms(y) else None
    learnable = learnable_share(y, usable, feats) if args.learnable else None
    return {"means": means, "ceiling": ceiling, "learnable": learnable, "note": note, "dropped": len(y) - len(usable)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="tables (default: the shared NB201 CSV and FBNet JSON)")
    parser.add_argument("--train", type=int, default=900)
    parser.add_argument("--small", type=int, default=100, help="the smaller training set")
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--shots", type=int, default=20, help="measured architectures of a device fitted by transfer")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", default=",".join(LEARNED_MODELS), help="model families to choose among")
    parser.add_argument("--devices", help="comma-separated subset of device columns")
    parser.add_argument("--learnable", action="store_true",
                        help="also fit on 90%% of the table and test on the rest: what the architecture explains")
    args = parser.parse_args()
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    torch.set_num_threads(1)
    try:
        if not args.files:
            shared = shared_benchmarks_dir()
            if shared is None:
                raise SpecError("no shared benchmarks folder found: give a table, or set ARCHETYPE_BENCHMARKS")
            args.files = [shared / "nb201.csv.gz", shared / "fbnet_latency.json.gz"]
        for path in args.files:
            run_table(Path(path), args)
    except SpecError as exc:
        print(f"latency_devices: error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_table(path: Path, args: argparse.Namespace) -> None:
    """Bench every device column of one table and print its block of lines."""
    table = load_published_table(path)
    devices = table.devices()
    if args.devices:
        wanted = [d.strip() for d in args.devices.split(",")]
        unknown = [d for d in wanted if d not in devices]
        if unknown:
            raise SpecError(f"{path}: no column latency_ms_{unknown[0]}; devices: {', '.join(devices)}")
        devices = wanted
    if not devices:
        raise SpecError(f"{path}: no latency_ms_<device> column")
    need = args.train + args.val + 1
    if len(table) < need:
        raise SpecError(f"{path}: {len(table)} rows; --train {args.train} and --val {args.val} need at least {need}")
    print(f"{path.name}: encoding {len(table)} {table.space} architectures", file=sys.stderr, flush=True)
    featurizer = featurizer_for(table.space)
    feats = [featurizer.encode(a) for a in table.archs]
    labels = [f"{args.train}", f"{args.small}", f"{args.shots}+T"]
    head = "  ".join(f"{f'±10%@{lb}':>10} {'±5%':>6} {'rho':>6} {'fit s':>6}" for lb in labels)
    print(f"\n{path.name} ({table.space}, {len(table)} architectures; train {args.train}/{args.small}, val "
          f"{args.val}, {args.shots} shots + transfer from the other columns; test on the rest; mean of "
          f"{args.seeds} seeds; models {','.join(args.models)})")
    learnable = f"  {'±10%@90%':>8} {'rho':>6}" if args.learnable else ""
    print(f"{'device':<15} {head}  {'rounding':>8}{learnable}  chosen model (seed 0, {args.train}); misses")
    for k, device in enumerate(devices, start=1):
        start = time.perf_counter()
        row = bench_device(table, device, feats, args)
        cells = "  ".join(f"{m[0]:>10.3f} {m[1]:>6.3f} {m[2]:>6.3f} {m[3]:>6.1f}" for m in row["means"].values())
        ceiling = f"{row['ceiling']:>8.3f}" if row["ceiling"] is not None else f"{'-':>8}"
        share, rho = row["learnable"] or (None, None)
        learned = f"  {share:>8.3f} {rho:>6.3f}" if share is not None else ""
        print(f"{device:<15} {cells}  {ceiling}{learned}  {row['note']}", flush=True)
        print(f"  [{k}/{len(devices)}] {device} done in {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
    print("next: archetype latency fit --csv FILE --device NAME [--shots 20 --pretrained-on A,B] to fit one device",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
