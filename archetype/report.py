"""Terminal tables of studies, trials and fronts (rich); the data come from the store."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _console() -> Console:
    """A console on stdout; wide when stdout is a file or pipe, so tables are not folded to 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


_METRICS = (("accuracy", "accuracy", "{:.4f}"), ("latency_ms", "latency ms", "{:.4f}"),
            ("params", "params", "{:,.0f}"), ("macs", "MACs", "{:,.0f}"), ("size_mb", "size MB", "{:.3f}"))


def _arch_line(trial: Any) -> str:
    """``conv_bn_act > inverted_residual > ...``: the operators stored beside the architecture, skipping identities;
    a benchmark cell space's architecture in its published encoding."""
    space = trial.outline.macro.get("space")
    if space in ("nb201", "fbnet"):
        from archetype.searchspace.architecture import Architecture

        cell = Architecture.from_json(trial.arch)
        return cell.to_nb201() if space == "nb201" else "-".join(cell.to_fbnet())
    from archetype.store import operator_summary  # the store's SQL stack loads only where trials are shown

    return operator_summary(trial.operators)


def trial_fields(trial: Any) -> dict[str, Any]:
    """A stored trial as JSON data, all but its architecture."""
    return {
        "number": trial.number, "state": trial.state.value, "values": trial.values, "error": trial.error,
        "arch_key": trial.arch_key, "timings": trial.timings, "attempt": trial.attempt, "target": trial.target,
    }


def write_study_json(head: Mapping[str, Any], trials: Iterable[Any], out: TextIO) -> None:
    """``head``'s fields, then ``trials`` as its list ``trials``: one JSON object, written trial by trial, each
    architecture copied as stored (JSON text) rather than decoded and encoded again."""
    text = json.dumps({**head, "trials": []}, indent=2, default=str)
    opening, closing = text.rsplit("[]", 1)
    out.write(opening + "[")
    for position, trial in enumerate(trials):
        fields = json.dumps(trial_fields(trial), default=str)
        out.write(("," if position else "") + "\n    " + fields[:-1] + ', "arch": ' + trial.arch_json + "}")
    out.write("\n  ]" + closing + "\n")


def trials_table(title: str, trials: Sequence[Any], front_numbers: set[int] | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("state")
    for _, header, _ in _METRICS:
        table.add_column(header, justify="right")
    table.add_column("architecture")
    for t in trials:
        mark = "*" if front_numbers and t.number in front_numbers else ""
        cells = [fmt.format(t.values[name]) if name in t.values else "-" for name, _, fmt in _METRICS]
        table.add_row(f"{t.number}{mark}", t.state.value, *cells, _arch_line(t))
    return table


def print_front(study: Any, trials: Sequence[Any], front: Sequence[Any]) -> None:
    console = _console()
    budget = ", ".join(str(c) for c in study.constraints) or "no constraints"
    ordered = sorted(front, key=lambda t: t.values.get("latency_ms", 0.0))
    console.print(trials_table(f"Pareto front of '{study.name}' ({budget}, target {study.target})", ordered))
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    console.print("trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


def print_studies(summaries: Sequence[Any], url: str) -> None:
    table = Table(title=f"studies in {url}", title_justify="left")
    for col in ("name", "space", "target", "status", "constraints", "trials", "created"):
        table.add_column(col)
    for s in summaries:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(s.counts.items())) or "0"
        constraints = ", ".join(str(c) for c in s.constraints)
        table.add_row(s.name, s.space, s.target, s.status, constraints, counts, f"{s.created_at:%Y-%m-%d %H:%M}")
    _console().print(table)


def print_study(study: Any, trials: Sequence[Any], front: Sequence[Any]) -> None:
    console = _console()
    objectives = ", ".join(f"{o.direction.value} {o.name}" for o in study.objectives)
    constraints = ", ".join(str(c) for c in study.constraints) or "none"
    console.print(f"study [bold]{study.name}[/]: space {study.space}, target {study.target}, status {study.status}")
    console.print(f"objectives: {objectives}; constraints: {constraints}")
    numbers = {t.number for t in front}
    console.print(trials_table("trials (* = on the feasible Pareto front)", trials, numbers))
    for t in trials:
        if t.error and t.state.value == "failed":
            console.print(f"trial {t.number} failed: {t.error}", markup=False)


def print_operators(rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title=f"{len(rows)} operators", title_justify="left")
    for col in ("family", "name", "signature", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["family"], r["name"], escape(r["signature"]), escape(r["paper"]))
    _console().print(table)


def print_spaces(rows: Sequence[dict[str, Any]]) -> None:
    table = Table(title="predefined spaces", title_justify="left")
    for col in ("name", "input", "slots", "architectures", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], escape(r["input"]), str(r["slots"]), f"{r['size']:.3g}", r["description"])
    _console().print(table)


def print_sample_check(report: Any, checked: bool) -> None:
    console = _console()
    data = report.to_json()
    what = "built and ran" if checked else "built"
    done = report.ran if checked else report.built
    console.print(
        f"space {report.space}: {report.sampled} sampled ({report.unique} distinct), all well-typed; "
        f"{done} {what}; {len(report.failures)} failed"
    )
    if report.params:
        p, m = data["params"], data["macs"]
        console.print(f"params {p['min']:,.0f} / {p['median']:,.0f} / {p['max']:,.0f} (min / median / max); "
                      f"MACs {m['min']:,.0f} / {m['median']:,.0f} / {m['max']:,.0f}")
    console.print("operators drawn: " + ", ".join(f"{k} {v}" for k, v in data["operators"].items()))
    for failure in report.failures:
        console.print(f"failed {failure}", markup=False)


def print_latency_result(command: str, result: dict[str, Any]) -> None:
    """The outcome of ``archetype latency build`` or ``check`` as a few lines."""
    console = _console()
    where = f"{result['space']} on {result['target']}"
    if command == "build":
        capped = f" (a sample of {result['capped_from']})" if result.get("capped_from") else ""
        console.print(f"latency table of {where}: {result['instances']} operator instances{capped}, "
                      f"{result['measured']} measured now, {result['stored_before']} already stored, "
                      f"{len(result['failed'])} failed, in {result['seconds']:.1f} s; stored in {result['storage']}")
        for instance, error in result["failed"].items():
            console.print(f"  failed: {escape(instance)}: {escape(error)}")
        return
    table = Table(title=f"latency predicted within ±10% on {result['architectures']} architectures of {where}",
                  title_justify="left")
    table.add_column("predictor")
    table.add_column("within ±10%", justify="right")
    table.add_column("median error", justify="right")
    table.add_row("table sum + overhead", f"{result['within_table']:.1%}", f"{result['median_error_table']:.1%}")
    table.add_row(f"table + learned ({result['folds']}-fold hold-out)", f"{result['within_predictor']:.1%}",
                  f"{result['median_error_predictor']:.1%}")
    console.print(table)
    skipped = f"; {result['not_measured']} drawn but not measurable" if result["not_measured"] else ""
    console.print(f"fixed overhead {result['overhead_ms']:.4f} ms; {result['instances_measured']} instances added "
                  f"to the table{skipped}; {result['seconds']:.1f} s")


def print_front_summary(study: Any, trials: Sequence[Any], summary: Any) -> None:
    """The feasible front of a study (knee marked ``*``), then its hypervolume and reference point."""
    console = _console()
    constraints = ", ".join(str(c) for c in study.constraints) or "no constraints"
    knee = {summary.knee.number} if summary.knee is not None else set()
    title = f"feasible Pareto front of '{study.name}' ({constraints}; * = knee)"
    console.print(trials_table(title, summary.front, knee))
    reference = ", ".join(f"{k} {v:.4g}" for k, v in summary.reference.items()) or "none"
    objectives = ", ".join(f"{o.direction.value} {o.name}" for o in study.objectives)
    console.print(f"{len(summary.front)} of {len(trials)} trials on the front ({objectives})")
    console.print(f"hypervolume {summary.hypervolume:.6g} (reference: {reference})")
