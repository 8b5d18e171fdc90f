"""Random command lines: exit 0/1 for a valid command, else exit 2 with exactly one line; never a traceback.

A search that validates reaches ``Search.run``, which is replaced here: the fuzz checks what the
command line refuses, and runs no search.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archetype import search as search_module
from archetype.cli import main
from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.result import Result, TrialState
from archetype.store import Store

EXAMPLES = 2500 if os.environ.get("ARCHETYPE_FUZZ") == "full" else 40

COMMANDS = ["search", "studies", "show", "ops", "spaces", "sample"]
OPTIONS = {
    "search": ["--space", "--latency-ms", "--trials", "--data", "--epochs", "--strategy", "--target", "--seed",
               "--study", "--workers", "--cpus-per-trial", "--scheduler", "--retries", "--spec", "--resume",
               "--storage", "--json"],
    "studies": ["--storage", "--json"],
    "show": ["--storage", "--json"],
    "ops": ["--family", "--json"],
    "spaces": ["--data", "--json"],
    "sample": ["--space", "-n", "--data", "--seed", "--json"],
}


class ReachedRun(BaseException):
    """A valid search got as far as running: the fuzz stops it there."""


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """A working folder with a store holding one study, a run spec and a space file."""
    with tempfile.TemporaryDirectory(prefix="arc-fuzz-") as name:
        path = Path(name)
        with Store.open(f"sqlite:///{path / 'kept.db'}") as store:
            store.create_study("kept", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                               constraints=(), spec={"space": "conv-small", "trials": 1})
            store.record_trial("kept", {"input": "Image[1,8,8]", "slots": []}, "0" * 16,
                               Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.1}))
        (path / "run.yaml").write_text("space: conv-small\nconstraints: [latency_ms<=1]\ntrials: 2\n")
        (path / "bad.yaml").write_text("space: [unclosed\n")
        (path / "space.yaml").write_text("slots:\n  - name: head\n    candidates:\n      - op: classifier_head\n")
        yield path


def values(folder: Path) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([
            "conv-small", "mobile", "nope", "0", "1", "-1", "2", "0.5", "1e-9", "nan", "inf", "-inf", "1e400",
            "digits", "mnist", "npz:missing.npz", "npz:", "cifar", "random", "evolution", "cpu-ort", "cpu-torch",
            "gpu", "asha", "kept", "missing", "attention", "conv",
            str(folder / "run.yaml"), str(folder / "bad.yaml"), str(folder / "space.yaml"), str(folder),
            f"sqlite:///{folder / 'kept.db'}", f"sqlite:///{folder / 'nowhere' / 'x.db'}", "not a url",
            "nosuchdb://u:pw@h/db", "postgresql+psycopg://u:pw@127.0.0.1:1/db", f"sqlite:///{folder}",
        ]),
        st.text(max_size=12),
        st.integers(-10**20, 10**20).map(str),
        st.floats().map(str),
    )


@st.composite
def argvs(draw: st.DrawFn, folder: Path) -> list[str]:
    command = draw(st.one_of(st.sampled_from(COMMANDS), st.text(max_size=8)))
    argv = [command]
    if command == "show" and draw(st.booleans()):
        argv.append(draw(st.sampled_from(["kept", "missing"])))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 9))
        if kind <= 6 and command in OPTIONS:
            option = draw(st.sampled_from(OPTIONS[command]))
            if option == "--json":
                argv.append(option)
            elif option == "-n":  # a few draws at most: a valid sample stays quick
                argv += [option, draw(st.sampled_from(["0", "-1", "1", "2", "x", "1e3", "2.5", ""]))]
            else:
                argv += [option, draw(values(folder))]
        elif kind <= 8:
            argv.append(draw(values(folder)))
        else:
            argv.append(draw(st.sampled_from(["-h", "--help", "--", "-", "--storage="])))
    return argv


def _dump(path: Path) -> list[list[tuple]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return [db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("studies", "trials", "trial_metrics")]


def test_cli_fuzz(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def reached(*args: object, **kwargs: object) -> None:
        raise ReachedRun

    monkeypatch.setattr(search_module.Search, "run", reached)
    monkeypatch.chdir(folder)
    monkeypatch.delenv("ARCHETYPE_STORAGE", raising=False)
    kept = _dump(folder / "kept.db")

    @settings(settings.get_profile("archetype-fuzz"), max_examples=EXAMPLES)
    @given(argv=argvs(folder))
    def run(argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
            except ReachedRun:
                code = 0
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert code in (0, 1, 2), (argv, code, err.getvalue())
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        if code == 2:
            assert len(lines) == 1, (argv, err.getvalue())
        assert _dump(folder / "kept.db") == kept, argv

    run()
