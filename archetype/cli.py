"""The ``archetype`` command line: search, studies, show, front, compress, latency, dashboard and the space tools."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from archetype.errors import ArchetypeError, SpecError

EXIT_USAGE = 2
DATA_HELP = ("digits, mnist, npz:PATH, folder:PATH (a sub-folder of PNG/JPEG images per class, "
             "optionally under train/ val/ test/), cifar10:PATH or cifar100:PATH (the python .tar.gz or its folder)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr (exit code 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


def _one_line(message: str) -> str:
    """``message`` with line breaks and other unprintable characters escaped, so that it prints as one line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in message)


_MODELS = {"spec": "archetype.spec:RunSpec", "compress": "archetype.compress.command:CompressOptions",
           "train": "archetype.final_training:FinalTrainOptions"}
"""The models whose field defaults a flag's help shows, imported only when help is printed."""


def _flag(parser: argparse.ArgumentParser, field: str, *names: str, model: str = "spec", **kwargs: Any) -> None:
    """A flag whose help ends with the default of ``field`` of ``model`` (filled in by ``_HelpFormatter``)."""
    action = parser.add_argument(*names, **kwargs)
    action.model_default = (model, field)  # type: ignore[attr-defined]


class _HelpFormatter(argparse.HelpFormatter):
    """Help that shows each marked flag's default as the model defines it, never a restated literal."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        marked = getattr(action, "model_default", None)
        if marked is None or text is None:
            return text
        import importlib

        from archetype.validation import field_default

        module, _, attribute = _MODELS[marked[0]].partition(":")
        value = field_default(getattr(importlib.import_module(module), attribute), marked[1])
        shown = ",".join(value) if isinstance(value, tuple) else value
        return f"{text} (default {str(shown).replace('%', '%%')})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="archetype",
        description="Latency-constrained neural architecture search and model compression.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    storage = _Parser(add_help=False)
    storage.add_argument(
        "--storage", metavar="URL",
        help="SQLAlchemy URL of the store (default: $ARCHETYPE_STORAGE, else sqlite:///archetype.db)",
    )
    storage.add_argument("--json", action="store_true", help="print JSON instead of tables")

    search = sub.add_parser(
        "search", parents=[storage], help="run a latency-constrained architecture search",
        description="Sample architectures from a typed space, train each on the data, measure its latency "
        "on the target, store every trial, and print the Pareto front of the trials within budget.",
    )
    search.add_argument("--space", help="predefined space name (see below) or a space .yaml file")
    search.add_argument("--latency-ms", type=float, metavar="MS", help="latency budget on the target, in ms")
    _flag(search, "trials", "--trials", type=int, help="number of architectures to evaluate")
    _flag(search, "data", "--data", help=DATA_HELP)
    _flag(search, "epochs", "--epochs", type=int, help="training epochs per architecture")
    _flag(search, "strategy", "--strategy", help="search strategy: random, evolution, tpe, nsga2, nsga3, gp, simq, "
          "oneshot (candidates scored on a trained supernet, the best then trained from scratch), or NNI's "
          "nni-evolution, nni-tpe, nni-rl (with the nni extra)")
    search.add_argument("--strategy-option", action="append", metavar="KEY=VALUE", dest="strategy_option",
                        help="an option of the strategy, e.g. population=20 (repeatable; VALUE is read as YAML)")
    _flag(search, "supernets", "--supernets", type=int, metavar="K",
          help="with --strategy oneshot: train a balanced mixture of K supernets")
    _flag(search, "target", "--target", help="latency target: cpu-ort, cpu-ort-int8, cpu-torch, cuda-ort, cuda-torch")
    search.add_argument("--precision", type=lambda text: text.split(","), metavar="LIST",
                        help="search each slot's precision with the architecture (SimQ-NAS), e.g. fp32,int8: "
                        "int8 slots run quantized (static QDQ, calibrated on training images) on target cpu-ort")
    _flag(search, "seed", "--seed", type=int, help="seed for the data split, strategy and weights")
    search.add_argument("--study", help="study name (default: <space>-<n>)")
    _flag(search, "workers", "--workers", type=int, help="evaluations at once (one gives the most stable latency)")
    search.add_argument("--cpus-per-trial", type=float,
                        help="CPUs each evaluation trains on (default: every core with one worker, else 1); "
                        "latency is still measured at the target's own thread count")
    _flag(search, "device", "--device", help="where candidates train: auto (CUDA when present), cpu, cuda, cuda:N; "
          "latency is still measured on the target")
    search.add_argument("--gpus-per-trial", type=float, metavar="G",
                        help="share of a GPU each evaluation gets, e.g. 0.5 for two trials per GPU "
                        "(default: 1/workers when training runs on CUDA)")
    _flag(search, "recipe", "--recipe", help="training preset of each candidate: quick, full or plain")
    search.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    search.add_argument("--scheduler", choices=["asha"],
                        help="asha: run the trials through Ray Tune and stop weak candidates early on epochs")
    _flag(search, "retries", "--retries", type=int, help="runs again of an evaluation whose worker process was lost")
    search.add_argument("--benchmark", metavar="FILE",
                        help="answer every evaluation from a published table (an NB201 CSV with an 'arch' column, "
                        "e.g. ../shared/benchmarks/nb201.csv.gz) instead of training: rehearse a strategy or budget")
    search.add_argument("--metric", metavar="COLUMN", help="with --benchmark: the accuracy column (e.g. cifar10_test)")
    search.add_argument("--latency-column", metavar="DEVICE",
                        help="with --benchmark: the latency column or device that answers latency_ms (e.g. raspi4)")
    search.add_argument("--spec", metavar="FILE", help="a run spec .yaml; flags given here override its fields")
    search.add_argument("--resume", metavar="STUDY",
                        help="continue a stored study whose search stopped (crash, Ctrl-C): finished trials are "
                        "kept, running ones are evaluated again; --trials may raise its number of trials")
    search.add_argument("--predict-latency", action="store_true", default=None,
                        help="prune candidates whose latency predicted from the latency table (archetype latency "
                        "build) exceeds the budget by more than the margin; done anyway when a table covers the "
                        "space and target")
    _flag(search, "latency_margin", "--latency-margin", type=float, metavar="SHARE",
          help="how far over the budget a prediction must be to prune, as a share of it")
    search.add_argument("--time-budget", metavar="DURATION",
                        help="bound the search by wall-clock time: 90s, 30m, 2h, 1h30m or seconds (default: none); "
                        "once spent nothing new starts and the running trials finish; with --resume, the study's "
                        "whole time, of which what its drivers already spent is taken off")

    sub.add_parser("studies", parents=[storage], help="list the studies in the store")

    latency = sub.add_parser(
        "latency", help="build and check a per-operator latency table",
        description="A latency table holds every operator instance of a space measured alone on a target, "
        "in the store; an architecture's latency is predicted from it plus a model learned from measured ones.",
    )
    latency_sub = latency.add_subparsers(dest="latency_command", required=True, parser_class=_Parser)
    build = latency_sub.add_parser(
        "build", parents=[storage], help="measure every operator instance of a space on a target",
        description="Measure each operator instance of the space (operator, values, input type) alone on the "
        "target and store it; instances already stored for this target and machine are skipped, so an "
        "interrupted build resumes.",
    )
    check = latency_sub.add_parser(
        "check", parents=[storage], help="measure random architectures and report the share predicted within 10%%",
        description="Measure n random architectures of the space on the target and print the share whose "
        "latency the table alone, and the table with the learned predictor (5-fold hold-out), predict within "
        "10%%. Measured architectures are stored and train the predictor a search uses.",
    )
    for command in (build, check):
        command.add_argument("--space", required=True, help="predefined space name or a space .yaml file")
        command.add_argument("--target", default="cpu-ort", help="latency target (default cpu-ort)")
        command.add_argument("--data", default="digits", help="data set whose input the space is fitted to")
        command.add_argument("--threads", type=int, default=1, help="the target's intra-op threads (default 1)")
    build.add_argument("--max-instances", type=int, metavar="N",
                       help="measure a seeded sample of N instances when the space has more")
    check.add_argument("-n", type=int, default=200, help="architectures to measure (default 200)")
    check.add_argument("--seed", type=int, default=0, help="seed of the architectures drawn (default 0)")
    fit = latency_sub.add_parser(
        "fit", parents=[storage], help="fit a learned latency predictor for a device from measured architectures",
        description="From a table of measured architectures (--csv: an 'arch' column and latency_ms_<device> "
        "columns) fit DEVICE's latency by gradient boosting or a graph network over the architecture graph, "
        "whichever predicts held-out rows better; with --pretrained-on, fit it from --shots rows by transfer "
        "from those devices. Without --csv, fit the search's predictor from the store's measured samples of "
        "--space on --target. Prints the share of held-out rows predicted within 10%%.",
    )
    fit.add_argument("--csv", metavar="FILE", help="table of measured architectures (NB201 arch strings)")
    fit.add_argument("--device", help="the device column to fit (latency_ms_<device>)")
    fit.add_argument("--shots", type=int, metavar="N", help="fit from N measured rows only (default all; 20 with "
                     "--pretrained-on)")
    fit.add_argument("--pretrained-on", metavar="A,B,...", help="devices to transfer from (columns of the table, "
                     "else of the shared published table)")
    fit.add_argument("--out", metavar="FILE.csv", help="write every architecture's predicted latency")
    fit.add_argument("--seed", type=int, default=0, help="seed of the rows chosen and the models (default 0)")
    fit.add_argument("--space", help="with the store: predefined space name or a space .yaml file")
    fit.add_argument("--target", default="cpu-ort", help="with the store: latency target (default cpu-ort)")
    fit.add_argument("--data", default="digits", help="with the store: data set whose input the space is fitted to")
    fit.add_argument("--threads", type=int, default=1, help="with the store: the target's intra-op threads")

    show = sub.add_parser("show", parents=[storage], help="print a study: its settings, trials and front")
    show.add_argument("study", help="study name")
    show.add_argument("--offset", type=int, default=0, help="skip this many trials, by number (default 0)")
    show.add_argument("--limit", type=int, help="list at most this many trials (default all)")

    front = sub.add_parser(
        "front", parents=[storage], help="print a study's feasible Pareto front, its knee and hypervolume",
        description="The complete trials that meet every constraint and that no other such trial dominates, "
        "ordered by the first objective; the knee (the best trade-off after scaling each objective to [0, 1]); "
        "the hypervolume they dominate up to the worst value of each objective over all complete trials.",
    )
    front.add_argument("study", help="study name")

    dashboard = sub.add_parser(
        "dashboard", help="serve a web dashboard of the studies and compression runs (read-only)",
        description="Serve a web app that reads the store and writes nothing: every study with its Pareto front, "
        "progress and trials, each trial's architecture, and each compression run's steps. A running study "
        "updates in the page without a reload. The JSON API is described at /api/openapi.json.",
    )
    dashboard.add_argument("--storage", metavar="URL",
                           help="SQLAlchemy URL of the store (default: $ARCHETYPE_STORAGE, else sqlite:///archetype.db)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    dashboard.add_argument("--token", help="require this token on every page and API call "
                           "(?token=T in the URL or an 'Authorization: Bearer T' header)")

    db = sub.add_parser("db", help="manage the store's database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db_sub.add_parser(
        "upgrade", parents=[storage], help="migrate the store's schema to the newest revision",
        description="Apply the store's schema migrations (Alembic) up to the newest revision; a store already "
        "there is left as it is. Search and compress upgrade a store on open; the dashboard, which never "
        "writes, asks for this command instead.",
    )

    compress = sub.add_parser(
        "compress", parents=[storage], help="compress a trained model to meet a latency budget on a target",
        description="Run compression steps in order (by default depth, joint, quantize), measure each result on "
        "the target, keep the steps that make the model faster within the accuracy budget, and stop once the "
        "latency budget (--latency-ms, or --speedup over the source timed side by side) is met. Writes the "
        "model (model.pt), its ONNX file (model.onnx, checked against PyTorch) and a report "
        "(report.json, report.txt) to --out, and stores the run. Exit code 0: budget met; 1: not met (the best "
        "reached is kept and written); 2: bad input.",
    )
    compress.add_argument("model", metavar="MODEL",
                          help="a .pt2 file of torch.export.save, an .onnx file (quantize only), pkg.module:factory "
                          "(with --weights), or STUDY:TRIAL from the store (trained on --data first: trials keep "
                          "no weights)")
    compress.add_argument("--trust-pickle", action="store_true",
                          help="also load a .pt file of torch.save(module): a pickle, which can run any code as it "
                          "loads (or set ARCHETYPE_TRUST_PICKLE=1)")
    latency = compress.add_mutually_exclusive_group(required=True)
    latency.add_argument("--latency-ms", type=float, metavar="MS", help="latency budget on the target, in ms")
    latency.add_argument("--speedup", type=float, metavar="X",
                         help="latency budget as times faster than the source, judged with both timed side by side "
                         "(stable where the machine's speed drifts during the run)")
    _flag(compress, "target", "--target", model="compress", help="latency target: cpu-ort or cpu-torch")
    compress.add_argument("--max-size-mb", type=float, metavar="MB", help="size budget of the model, in MB")
    _flag(compress, "max_accuracy_drop", "--max-accuracy-drop", model="compress", type=float, metavar="PP",
          help="most test accuracy lost, in percentage points")
    _flag(compress, "data", "--data", model="compress", help=DATA_HELP)
    _flag(compress, "pipeline", "--pipeline", model="compress", help="steps in order, comma-separated")
    compress.add_argument("--out", metavar="DIR", help="folder to write the result to (must not exist or be empty)")
    compress.add_argument("--weights", metavar="FILE", help="state dict for a pkg.module:factory MODEL")
    _flag(compress, "epochs", "--epochs", model="compress", type=int, help="fine-tuning epochs after each step")
    _flag(compress, "seed", "--seed", model="compress", type=int, help="seed for the data split and fine-tuning")
    compress.add_argument("--name", help="compression run name (default compress-<n>)")
    _flag(compress, "device", "--device", model="compress",
          help="where fine-tuning runs: auto (CUDA when present), cpu, cuda, cuda:N")

    final = sub.add_parser(
        "train", parents=[storage], help="train a searched architecture from scratch and write it for deployment",
        description="Train the architecture of a study's trial from scratch on all of the training data (train "
        "and validation splits), measure its test accuracy and its latency on the target, and write model.pt2 "
        "(torch.export), model.onnx (checked against PyTorch) and report.json to --out, all at once.",
    )
    final.add_argument("trial", metavar="STUDY:TRIAL", help="the trial to train, e.g. conv-small-1:7")
    final.add_argument("--out", required=True, metavar="DIR", help="folder to write to (must not exist or be empty)")
    _flag(final, "epochs", "--epochs", model="train", type=int, help="training epochs")
    _flag(final, "recipe", "--recipe", model="train", help="training preset: full, quick or plain")
    final.add_argument("--data", help="data set (default: the study's)")
    final.add_argument("--target", help="latency target (default: the study's)")
    _flag(final, "device", "--device", model="train", help="auto (CUDA when present), cpu, cuda, cuda:N")
    final.add_argument("--seed", type=int, help="seed of the weights and augmentation (default: the study's)")

    output = _Parser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ops = sub.add_parser("ops", parents=[output], help="list the registered operators",
                         description="Every registered operator with its family, type signature and paper.")
    ops.add_argument("--family", help="only this family (e.g. attention, mobile, state-space)")

    spaces = sub.add_parser("spaces", parents=[output], help="list the predefined search spaces")
    spaces.add_argument("--data", default="digits", help="data set whose input the spaces are fitted to")

    sample = sub.add_parser(
        "sample", parents=[output], help="sample architectures from a space and check them",
        description="Draw architectures from a space; each is type-checked when drawn. With --check each is "
        "also built and run on a batch of two. Exit code 1 if any fails.",
    )
    sample.add_argument("--space", required=True, help="predefined space name or a space .yaml file")
    sample.add_argument("-n", type=int, default=20, help="architectures to draw (default 20)")
    sample.add_argument("--check", action="store_true", help="build each architecture and run a forward pass")
    sample.add_argument("--data", default="digits", help="data set whose input the space is fitted to")
    sample.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "search": _search, "studies": _studies, "show": _show, "front": _front, "ops": _ops, "spaces": _spaces,
        "sample": _sample, "dashboard": _dashboard, "db": _db, "latency": _latency, "compress": _compress,
        "train": _train,
    }
    try:
        return commands[args.command](args)
    except ArchetypeError as exc:
        print(f"archetype {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"archetype {args.command}: interrupted; finished trials are stored", file=sys.stderr)
        return 130


_SEARCH_FIELDS = {
    "space": "space", "trials": "trials", "data": "data", "epochs": "epochs", "strategy": "strategy",
    "target": "target", "seed": "seed", "study": "study", "workers": "workers",
    "cpus_per_trial": "cpus_per_trial", "ray_address": "ray_address", "retries": "retries",
    "scheduler": "scheduler", "supernets": "supernets", "predict_latency": "predict_latency",
    "latency_margin": "latency_margin", "precision": "precision", "benchmark": "benchmark", "metric": "metric",
    "latency_column": "latency_column",
    "device": "device", "gpus_per_trial": "gpus_per_trial", "recipe": "recipe", "time_budget": "time_budget",
}


def _spec_from_args(args: argparse.Namespace) -> Any:
    from archetype.spec import RunSpec

    if args.spec:
        base = RunSpec.from_yaml(args.spec).to_json()
        where = f"{args.spec} with command-line flags"
    else:
        base, where = {}, "command line"
    for flag, name in _SEARCH_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            base[name] = value
    if args.strategy_option:
        base["strategy_options"] = {**base.get("strategy_options", {}), **_strategy_options(args.strategy_option)}
    if args.latency_ms is not None:
        constraints = [c for c in base.get("constraints", []) if _constraint_name(c) != "latency_ms"]
        base["constraints"] = [*constraints, f"latency_ms<={args.latency_ms}"]
    if "space" not in base:
        raise ArchetypeError("--space is required (a predefined space name or a .yaml file)")
    if not base.get("constraints") and args.latency_ms is None:
        raise ArchetypeError("--latency-ms is required: the latency budget on the target, in ms")
    if args.latency_ms is not None and not 0 < args.latency_ms < float("inf"):
        raise ArchetypeError(f"--latency-ms must be a positive number of milliseconds, got {args.latency_ms}")
    return RunSpec.from_mapping(base, where=where)


def _strategy_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each VALUE read as YAML (so ``20`` is an integer and ``ridge`` a string)."""
    import yaml

    from archetype.searchspace.yaml_space import safe_load_bounded

    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ArchetypeError(f"--strategy-option {item!r}: expected KEY=VALUE, e.g. population=20")
        try:
            options[key.strip()] = safe_load_bounded(text, f"--strategy-option {key.strip()}")
        except yaml.YAMLError:
            raise ArchetypeError(f"--strategy-option {key.strip()}: cannot read value {text!r}") from None
    return options


def _constraint_name(item: Any) -> str:
    return item["name"] if isinstance(item, dict) else str(item).split("<")[0].split(">")[0].strip()


def _search(args: argparse.Namespace) -> int:
    from archetype.search import prepare_search
    from archetype.store import Store

    if args.resume is not None:
        return _resume(args)
    spec = _spec_from_args(args)
    search = prepare_search(spec)
    with Store.open(args.storage) as store, _SearchProgress(spec, quiet=args.json) as progress:
        report = search.run(store, on_trial=progress.update)
    return _print_search(args, spec, store, report)


def _resume(args: argparse.Namespace) -> int:
    from archetype.search import prepare_search, stored_spec
    from archetype.store import Store

    others = [f"--{f.replace('_', '-')}" for f in (*_SEARCH_FIELDS, "latency_ms", "spec", "strategy_option")
              if f not in ("trials", "time_budget") and getattr(args, f) is not None]
    if others:
        raise ArchetypeError(f"--resume continues the stored run spec; drop {', '.join(others)} "
                             "(--trials and --time-budget may change)")
    with Store.open(args.storage) as store:
        spec = stored_spec(store, args.resume, args.trials, args.time_budget)
        search = prepare_search(spec)
        with _SearchProgress(spec, quiet=args.json, done=store.trials(args.resume)) as progress:
            report = search.run(store, on_trial=progress.update, resume=True)
    return _print_search(args, spec, store, report)


def _print_search(args: argparse.Namespace, spec: Any, store: Any, report: Any) -> int:
    name, loop = report.study.name, report.loop
    if args.json:
        _print_json({
            "study": name, "storage": store.url, "trials": len(report.trials), "loop": loop,
            "front": [_trial_json(t) for t in report.front],
        })
    else:
        from archetype.report import print_front

        print_front(report.study, report.trials, report.front)
        screened = f", {loop['screened']} more screened out before training" if loop.get("screened") else ""
        print(f"stored: study '{name}' in {store.url} ({loop.get('evaluated', len(report.trials))} trials "
              f"evaluated{screened})")
    stopped = loop.get("stopped_by")
    if stopped == "time budget":
        print(f"archetype search: the time budget of {loop['time_budget_s']:g} s is spent after "
              f"{loop['evaluated']} of {spec.trials} trials; to go on: archetype search --resume {name} "
              f"--time-budget <more> --storage {store.url}", file=sys.stderr)
    elif stopped == "screened cap":
        from archetype.trial_loop import SCREEN_CAP

        print(f"archetype search: {loop['screened']} candidates were predicted over the budget "
              f"and screened out (the cap is {loop['screen_cap']}, {SCREEN_CAP} per trial): the budget looks "
              "out of reach of this space; raise --latency-ms or give a space of smaller operators", file=sys.stderr)
    if not report.front:
        budget = spec.latency_budget()
        measured = [t.values["latency_ms"] for t in report.trials if "latency_ms" in t.values]
        fastest = f"; the fastest measured {min(measured):.4f} ms" if measured else ""
        what = f"the latency budget of {budget:g} ms" if budget is not None else "the constraints"
        print(
            f"archetype search: error: no trial met {what}{fastest}; study '{name}' is stored",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(f"next: archetype front {name} --storage {store.url}  (or archetype dashboard --storage {store.url})",
          file=sys.stderr)
    return 0


def _studies(args: argparse.Namespace) -> int:
    from archetype.store import Store

    with Store.open(args.storage) as store:
        summaries = store.list_studies()
    if args.json:
        _print_json([
            {**_study_json(s), "counts": s.counts} for s in summaries
        ])
        return 0
    from archetype.report import print_studies

    print_studies(summaries, store.url)
    return 0


def _stored_study(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """The study ``args.study`` of ``args.storage`` and its trials."""
    from archetype.store import Store

    with Store.open(args.storage) as store:
        return store.get_study(args.study), store.trials(args.study)


def _show(args: argparse.Namespace) -> int:
    from archetype.pareto import feasible_front
    from archetype.store import Store

    if args.offset < 0 or (args.limit is not None and args.limit < 1):
        raise SpecError(f"--offset must be 0 or more and --limit 1 or more, got {args.offset} and {args.limit}")
    paged = args.offset != 0 or args.limit is not None
    with Store.open(args.storage) as store:
        study = store.get_study(args.study)
        trials = store.trials(args.study, offset=args.offset, limit=args.limit)
        everything: Sequence[Any] = store.trial_outcomes(args.study) if paged else trials
    front = feasible_front(everything, study.objectives, study.constraints)
    shown_to = args.offset + len(trials)
    if shown_to < len(everything):
        hint = f"archetype show {args.study} --offset {shown_to} --limit {args.limit or len(trials)}"
    else:
        hint = f"archetype front {args.study}"
    if args.json:
        from archetype.report import write_study_json

        head = {**_study_json(study), "total": len(everything), "front": [t.number for t in front]}
        write_study_json(head, trials, sys.stdout)
    else:
        from archetype.report import print_study

        print_study(study, trials, front)
        if paged:
            print(f"trials {args.offset + 1}-{shown_to} of {len(everything)}")
    print(f"next: {hint} --storage {store.url}", file=sys.stderr)
    return 0


def _front(args: argparse.Namespace) -> int:
    from archetype.pareto import summarise_front

    study, trials = _stored_study(args)
    summary = summarise_front(trials, study.objectives, study.constraints)
    if args.json:
        _print_json({
            "study": study.name, "objectives": [o.to_json() for o in study.objectives],
            "constraints": [c.to_json() for c in study.constraints],
            "front": [_trial_json(t) for t in summary.front],
            "knee": None if summary.knee is None else summary.knee.number,
            "hypervolume": summary.hypervolume, "reference": summary.reference,
        })
        return 0
    from archetype.report import print_front_summary

    print_front_summary(study, trials, summary)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from archetype.dashboard.server import serve

    serve(args.storage, args.host, args.port, args.token)
    return 0


def _db(args: argparse.Namespace) -> int:
    from archetype.store import Store, head_revision

    with Store.open(args.storage) as store:
        url = store.url
    if args.json:
        _print_json({"storage": url, "revision": head_revision()})
    else:
        print(f"{url}: schema at revision {head_revision()}, the newest")
    print(f"next: archetype dashboard --storage {url}", file=sys.stderr)
    return 0


def _ops(args: argparse.Namespace) -> int:
    from archetype.searchspace import list_operators
    from archetype.searchspace.relations import signature

    ops = list_operators(args.family)
    if not ops:
        families = sorted({o.family for o in list_operators()})
        raise ArchetypeError(f"no operators in family {args.family!r}; families: {', '.join(families)}")
    rows = [
        {"name": o.name, "family": o.family, "signature": signature(o), "paper": o.paper,
         "hyperparameters": list(o.hyperparameters()), "domain": {k: list(v) for k, v in o.domain.items()}}
        for o in ops
    ]
    if args.json:
        _print_json(rows)
        return 0
    from archetype.report import print_operators

    print_operators(rows)
    return 0


def _spaces(args: argparse.Namespace) -> int:
    from archetype.runtime.data import load_dataset
    from archetype.searchspace import get_space, list_spaces

    data = load_dataset(args.data)
    rows = []
    for name in list_spaces():
        space = get_space(name, data.input_type, data.num_classes)
        ops = sorted({c.op for slot in space.slots for c in slot.candidates})
        rows.append({"name": name, "description": space.description, "input": str(space.input),
                     "slots": len(space.slots), "size": space.size(), "operators": ops})
    if args.json:
        _print_json(rows)
        return 0
    from archetype.report import print_spaces

    print_spaces(rows)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from archetype.runtime.data import load_dataset
    from archetype.searchspace import get_space
    from archetype.searchspace.sample_check import check_samples

    if args.n < 1:
        raise ArchetypeError(f"-n must be a positive integer, got {args.n}")
    data = load_dataset(args.data)
    space = get_space(args.space, data.input_type, data.num_classes)
    progress = Progress(console=Console(stderr=True), disable=args.json)
    with progress:
        task = progress.add_task(f"sampling {space.name}", total=args.n)
        report = check_samples(space, args.n, args.seed, run=args.check,
                               on_sample=lambda: progress.advance(task))
    if args.json:
        _print_json(report.to_json())
    else:
        from archetype.report import print_sample_check

        print_sample_check(report, checked=args.check)
    return 1 if report.failures else 0


def _latency(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from archetype.latency_predictor import check_predictions
    from archetype.latency_tables import LatencyTable
    from archetype.runtime.data import load_dataset
    from archetype.runtime.targets import get_target
    from archetype.searchspace import get_space
    from archetype.store import Store

    if args.latency_command == "fit":
        return _latency_fit(args)
    count = args.max_instances if args.latency_command == "build" else args.n
    if count is not None and count < 1:
        flag = "--max-instances" if args.latency_command == "build" else "-n"
        raise ArchetypeError(f"{flag} must be a positive integer, got {count}")
    data = load_dataset(args.data)
    space = get_space(args.space, data.input_type, data.num_classes)
    target = get_target(args.target, threads=args.threads)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=Console(stderr=True), disable=args.json)
    with Store.open(args.storage) as store, progress:
        table = LatencyTable(store, target)
        if args.latency_command == "build":
            task = progress.add_task(f"latency table {space.name} on {target.name}", total=None)
            report = table.build(space, max_instances=args.max_instances,
                                 on_start=lambda n: progress.update(task, total=n),
                                 on_instance=lambda _: progress.advance(task))
            result = {"space": space.name, "target": target.name, "storage": store.url, **report.to_json()}
        else:
            task = progress.add_task(f"measuring {space.name} on {target.name}", total=args.n)
            missing = progress.add_task("operator instances not in the table yet", total=None)
            check = check_predictions(table, space, args.n, seed=args.seed, on_arch=lambda _: progress.advance(task),
                                      on_missing=lambda n: progress.update(missing, total=n),
                                      on_instance=lambda _: progress.advance(missing))
            result = {"storage": store.url, **check.to_json()}
    if args.json:
        _print_json(result)
    else:
        from archetype.report import print_latency_result

        print_latency_result(args.latency_command, result)
    return 1 if result.get("failed") else 0


def _latency_fit(args: argparse.Namespace) -> int:
    if args.shots is not None and args.shots < 1:
        raise ArchetypeError(f"--shots must be a positive integer, got {args.shots}")
    if args.csv is None:
        return _latency_fit_stored(args)
    if not args.device:
        raise ArchetypeError("--device is required with --csv: the latency_ms_<device> column to fit")
    from archetype.worker.latency_fit import fit_device, write_predictions

    sources = [d.strip() for d in (args.pretrained_on or "").split(",") if d.strip()]
    print(f"fitting {args.device} from {args.csv}", file=sys.stderr, flush=True)
    fitted = fit_device(args.csv, args.device, shots=args.shots, pretrained_on=sources, seed=args.seed)
    if args.out:
        write_predictions(args.out, fitted)
    result = {**fitted.to_json(), "out": args.out}
    if args.json:
        _print_json(result)
    else:
        how = (f"transfer from {', '.join(fitted.pretrained_on)}" if fitted.method == "transfer"
               else f"learned ({fitted.method})")
        print(f"{fitted.device}: {how}, fitted from {fitted.samples} measured rows of {fitted.source} in "
              f"{fitted.seconds:.1f} s")
        if fitted.held_out:
            print(f"on the {fitted.held_out} measured rows it did not see: {fitted.within_10:.1%} within ±10%, "
                  f"{fitted.within_5:.1%} within ±5%, Spearman {fitted.spearman:.3f}")
        if fitted.validation:
            shares = ", ".join(f"{k} {v:.1%}" for k, v in fitted.validation.items() if not k.endswith("_error"))
            print(f"within ±10% on the rows held out to choose the model: {shares}")
        if args.out:
            print(f"predicted latency of {len(fitted.archs)} architectures written to {args.out}")
    print(f"next: python bench/latency_devices.py {args.csv} --devices {args.device} to score every setting"
          if args.out else "next: add --out FILE.csv to write the predicted latency of every architecture",
          file=sys.stderr)
    return 0


def _latency_fit_stored(args: argparse.Namespace) -> int:
    from archetype.latency_predictor import LatencyPredictor
    from archetype.latency_tables import LatencyTable
    from archetype.runtime.data import load_dataset
    from archetype.runtime.targets import get_target
    from archetype.searchspace import get_space
    from archetype.store import Store

    if not args.space:
        raise ArchetypeError("latency fit needs --csv FILE --device NAME, or --space with the store's samples")
    data = load_dataset(args.data)
    space = get_space(args.space, data.input_type, data.num_classes)
    target = get_target(args.target, threads=args.threads)
    with Store.open(args.storage) as store:
        table = LatencyTable(store, target)
        samples = store.latency_samples(target.name, table.device, space.name)
        predictor = LatencyPredictor(table, space, args.seed).fit_stored()
        result = {"space": space.name, "target": target.name, "storage": store.url, "samples": len(samples),
                  "model": predictor.model_name, "validation": predictor.validation}
    if args.json:
        _print_json(result)
    elif predictor.model_name is None:
        print(f"{space.name} on {target.name}: {len(samples)} measured architectures stored, too few to learn "
              "from; the table alone predicts")
    else:
        scores = predictor.validation
        shares = ", ".join(f"{k} {v:.1%}" for k, v in scores.items() if not k.endswith("_error"))
        print(f"{space.name} on {target.name}: correction learned from {len(samples)} measured architectures; "
              f"within ±10% on held-out ones: {shares}; {predictor.model_name} serves the search")
    print(f"next: archetype latency check --space {space.name} --target {target.name} -n 200 to measure more",
          file=sys.stderr)
    return 0


def _compress(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from archetype.compress.command import CompressOptions, parse_pipeline, run_compress
    from archetype.compress.report import report_table, speedup_text
    from archetype.store import Store

    given = _given(args, "data", "target", "max_accuracy_drop", "epochs", "seed", "device")
    if args.pipeline is not None:
        given["pipeline"] = parse_pipeline(args.pipeline)
    options = CompressOptions(
        model=args.model, latency_ms=args.latency_ms, speedup=args.speedup, max_size_mb=args.max_size_mb,
        weights=args.weights,
        out=Path(args.out) if args.out else None, name=args.name, trust_pickle=args.trust_pickle, **given,
    )
    with Store.open(args.storage) as store, _CompressProgress(len(options.pipeline) + 1, quiet=args.json) as progress:
        loaded, result = run_compress(options, store, progress.update, progress.say)
    console = Console(stderr=True, quiet=args.json)
    if loaded.note:
        console.print(loaded.note)
    where = f"; written to {result.out_dir}" if result.out_dir else ""
    if args.json:
        _print_json({**result.to_json(), "note": loaded.note, "storage": store.url})
    else:
        Console().print(report_table(result, options.target))
        if result.side_by_side is not None:
            print(f"speedup {speedup_text(result)}")
        print(f"stored: compression run '{result.name}' in {store.url}{where}")
    final, source = result.metrics, result.source
    if result.already_met:
        print(f"archetype compress: the model already meets the budget ({source.latency_ms:.4f} ms; "
              f"budget {options.budget.describe()}); nothing to compress, nothing written", file=sys.stderr)
        return 0
    if result.status != "complete":
        print(f"archetype compress: error: the budget is not met; the best reached is {final.latency_ms:.4f} ms "
              f"({speedup_text(result)}), {final.size_mb:.3f} MB, accuracy "
              f"{final.accuracy:.4f}; kept{where}", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from archetype.final_training import FinalTrainOptions, run_final_training
    from archetype.store import Store

    options = FinalTrainOptions(trial=args.trial, out=Path(args.out), data=args.data, target=args.target,
                                seed=args.seed, **_given(args, "epochs", "recipe", "device"))
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[loss]}"), console=Console(stderr=True))
    task = progress.add_task("train", total=options.epochs, loss="")

    def on_epoch(epoch: int, loss: float) -> None:  # the bar appears once training runs, after every check passed
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=epoch, loss=f"loss {loss:.4f}")

    with Store.open(args.storage) as store:
        try:
            result = run_final_training(options, store, on_epoch=on_epoch)
        finally:
            progress.stop()
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"trial {result.trial} of study '{result.study}': test accuracy {result.test_accuracy:.4f}, "
              f"{result.latency_ms:.4f} ms on {result.target} (trained {result.epochs} epochs, recipe "
              f"{result.recipe}, on {result.device}, {result.train_s:.0f} s)")
        print(f"written: {result.out}/model.pt2, model.onnx, report.json")
    budget = result.latency_budget_ms if result.latency_budget_ms is not None else result.latency_ms / 2
    print(f"next: archetype compress {result.out}/model.pt2 --latency-ms {budget:g} --data {result.data} "
          f"--target {result.target}", file=sys.stderr)
    return 0


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The flags among ``names`` given on the command line: the others keep the model's defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _study_json(study: Any) -> dict[str, Any]:
    return {
        "name": study.name, "space": study.space, "target": study.target, "status": study.status,
        "objectives": [o.to_json() for o in study.objectives],
        "constraints": [c.to_json() for c in study.constraints],
        "created_at": study.created_at.isoformat(), "updated_at": study.updated_at.isoformat(),
    }


def _trial_json(trial: Any) -> dict[str, Any]:
    from archetype.report import trial_fields

    return {**trial_fields(trial), "arch": trial.arch}


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class _SearchProgress:
    """Progress on stderr in every mode: evaluated trials against ``--trials``, screened ones apart, the best within
    budget and the time left; a bar on a terminal, else a plain line at most once a second."""

    def __init__(self, spec: Any, quiet: bool, done: Sequence[Any] = ()) -> None:
        import time

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from archetype.strategies import supernet_strategies

        self._spec, self._clock = spec, time.monotonic
        self._start, self._last_line = self._clock(), 0.0
        self._best: float | None = None
        self._counts: dict[str, int] = {}
        self._screened = 0
        console = Console(stderr=True)
        self._plain = quiet or not console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=console, disable=self._plain, transient=False,
        )
        self._total = spec.trials + (spec.finalists if spec.strategy in supernet_strategies() else 0)
        self._task = self._progress.add_task("search", total=self._total, completed=0, status="")
        for trial in done:
            if trial.state.finished:
                self._count(trial)

    def __enter__(self) -> _SearchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
        if self._plain:
            self._line()

    def _count(self, trial: Any) -> None:
        from archetype.pareto import is_feasible
        from archetype.trial_loop import is_screened

        if is_screened(trial):
            self._screened += 1
        else:
            state = trial.state.value
            self._counts[state] = self._counts.get(state, 0) + 1
            self._progress.advance(self._task)
        if is_feasible(trial, self._spec.constraints):
            acc = trial.values.get("accuracy")
            if acc is not None and (self._best is None or acc > self._best):
                self._best = acc

    def _status(self) -> str:
        best = f"best within budget {self._best:.3f}" if self._best is not None else "none within budget yet"
        counts = " ".join(f"{k} {v}" for k, v in sorted(self._counts.items()))
        screened = f" | screened out {self._screened}" if self._screened else ""
        budget = self._spec.time_budget_s
        left = f" | time budget {budget:g} s" if budget is not None else ""
        return f"{counts}{screened} | {best}{left}"

    def _line(self) -> None:
        evaluated = sum(self._counts.values())
        elapsed = int(self._clock() - self._start)
        self._progress.console.print(f"[{elapsed // 60}:{elapsed % 60:02d}] search {evaluated}/{self._total} "
                                     f"{self._status()}", highlight=False, markup=False)

    def update(self, trial: Any) -> None:
        self._count(trial)
        if not self._plain:
            self._progress.update(self._task, status=self._status())
        elif self._clock() - self._last_line >= 1.0:
            self._last_line = self._clock()
            self._line()


class _CompressProgress:
    """Progress on stderr in every mode: a bar on a terminal, else plain lines; each step's verdict; time left."""

    def __init__(self, total: int, quiet: bool) -> None:
        import time

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._clock = time.monotonic
        self._start = self._clock()
        self._total, self._done, self._last_line = total, 0, 0.0
        console = Console(stderr=True)
        self._plain = quiet or not console.is_terminal  # --json or a pipe: lines, never a redrawn bar
        self._progress = Progress(
            SpinnerColumn(), TextColumn("[bold]compress[/bold] {task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[left]}"), console=console,
            disable=self._plain,
        )
        self._task = self._progress.add_task("", total=total, left="")
        self._step = ""

    def __enter__(self) -> _CompressProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def _left(self) -> str:
        """The time left, from the mean time of the steps done so far."""
        if not self._done:
            return ""
        elapsed = self._clock() - self._start
        left = elapsed / self._done * max(0, self._total - self._done)
        return f"~{int(left) // 60}:{int(left) % 60:02d} left"

    def _line(self, text: str) -> None:
        elapsed = int(self._clock() - self._start)
        left = self._left()
        self._progress.console.print(f"[{elapsed // 60}:{elapsed % 60:02d}] {text}" + (f" ({left})" if left else ""),
                                     highlight=False, markup=False)

    def say(self, text: str) -> None:
        """A line of what a step is doing: on the bar on a terminal, else printed (at most one a second)."""
        if not self._plain:
            self._progress.update(self._task, description=text, left=self._left())
        elif self._clock() - self._last_line >= 1.0:
            self._last_line = self._clock()
            self._line(text)

    def update(self, name: str, outcome: Any) -> None:
        if outcome is None:
            self._step = name
            self._progress.update(self._task, description=name, left=self._left())
            if self._plain:
                self._line(f"{name}: started")
            return
        m = outcome.metrics
        figures = f"{m.latency_ms:.4f} ms, {m.size_mb:.3f} MB, accuracy {m.accuracy:.4f}: " if m is not None else ""
        self._done += 1
        self._progress.advance(self._task)
        self._line(f"{name} ({outcome.seconds:.0f} s): {figures}{outcome.message}")
