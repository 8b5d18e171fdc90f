"""The compression report as a table: one row per step, measured on the target, with speedup and accuracy drop."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from archetype.compress.pipeline import CompressionResult
    from archetype.compress.step import CompressionContext


def report_table(result: CompressionResult, target: str) -> Table:
    """A rich table of the source and every step: latency, speedup, size, params, MACs, accuracy, verdict."""
    source = result.source
    table = Table(title=f"compression on {target}: {result.status}", title_justify="left")
    for column in ("step", "latency ms", "speedup", "size MB", "params", "MACs", "accuracy", "drop pp", "kept",
                   "note"):
        table.add_column(column, justify="left" if column in ("step", "note", "kept") else "right",
                         overflow="fold")
    for step in result.steps:
        m = step.metrics
        if m is None:
            table.add_row(step.name, "-", "-", "-", "-", "-", "-", "-", "no", step.message)
            continue
        table.add_row(
            step.name, f"{m.latency_ms:.4f}", f"{source.latency_ms / m.latency_ms:.2f}x", f"{m.size_mb:.3f}",
            f"{m.params:,}", f"{m.macs:,}", f"{m.accuracy:.4f}", f"{100 * (source.accuracy - m.accuracy):+.2f}",
            "yes" if step.accepted else "no", step.message,
        )
    return table


def render_table(result: CompressionResult, context: CompressionContext) -> str:
    """The report table as plain text, for report.txt."""
    sink = io.StringIO()
    console = Console(file=sink, width=160, color_system=None, force_terminal=False)
    console.print(report_table(result, context.target.name))
    final = result.metrics
    console.print(f"budget {context.budget.describe()}: final {final.latency_ms:.4f} ms, "
                  f"{speedup_text(result)} faster, {final.size_mb:.3f} MB, "
                  f"accuracy {final.accuracy:.4f} ({100 * (result.source.accuracy - final.accuracy):+.2f} pp drop)")
    return sink.getvalue().rstrip()


def speedup_text(result: CompressionResult) -> str:
    """``2.71x (2.65-2.80, side by side)``, or the ratio of the step measurements when there was no side-by-side."""
    timing = result.side_by_side
    if timing is None:
        return f"{result.speedup:.2f}x"
    spread = f"{timing.ratio_low:.2f}-{timing.ratio_high:.2f}"
    return f"{timing.ratio:.2f}x ({spread} over {timing.rounds} rounds side by side)"
