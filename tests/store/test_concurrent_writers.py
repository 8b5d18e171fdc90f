"""Several processes writing one store at once: every trial stored once, numbers unique and dense.

PostgreSQL: 8 processes store 500 trials each into one study. SQLite: several processes (and several
whole searches) write one file; writes take the lock up front and wait for it, so none fails
with "database is locked".
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.result import TrialState
from archetype.store import Store

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from archetype.result import Result, TrialState
    from archetype.store import Store

    url, study, writer, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    with Store.open(url) as store:
        while not go.exists():  # every writer is ready before the first one writes
            time.sleep(0.01)
        for i in range(count):
            result = Result(TrialState.COMPLETE, {"accuracy": i / count, "writer": float(writer)})
            store.record_trial(study, {"writer": writer, "i": i}, f"{writer:04d}{i:012d}", result)
""")


def _write_at_once(url: str, study: str, writers: int, trials: int, tmp_path: Path) -> list[str]:
    """Start ``writers`` processes that each store ``trials`` trials, release them together; their stderr."""
    with Store.open(url) as store:
        store.create_study(study, space="s", target="cpu-ort", objectives=DEFAULT_OBJECTIVES, constraints=(),
                           spec={})
    go = tmp_path / "go"
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, study, str(w), str(trials), str(go)],
                         stderr=subprocess.PIPE, text=True)
        for w in range(writers)
    ]
    time.sleep(0.5)
    go.touch()
    errors = []
    for process in processes:
        _, err = process.communicate(timeout=300)
        errors.append(err if process.returncode else "")
    return errors


def _check_every_trial_stored_once(url: str, study: str, writers: int, trials: int) -> None:
    with Store.open(url) as store:
        stored = store.trials(study)
    assert len(stored) == writers * trials
    assert [t.number for t in stored] == list(range(1, writers * trials + 1))
    assert Counter(t.arch_key for t in stored) == Counter(f"{w:04d}{i:012d}" for w in range(writers)
                                                          for i in range(trials))
    assert all(t.state is TrialState.COMPLETE and t.values["writer"] == t.arch["writer"] for t in stored)


@pytest.mark.slow
def test_eight_processes_store_500_trials_each_into_one_postgresql_study(postgres_url: str, tmp_path: Path) -> None:
    errors = _write_at_once(postgres_url, "crowded", 8, 500, tmp_path)
    assert errors == [""] * 8, [e for e in errors if e]
    _check_every_trial_stored_once(postgres_url, "crowded", 8, 500)


@pytest.mark.slow
def test_several_processes_write_one_sqlite_file_without_locking_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    errors = _write_at_once(url, "crowded", 4, 100, tmp_path)
    assert errors == [""] * 4, [e for e in errors if e]
    _check_every_trial_stored_once(url, "crowded", 4, 100)


SEARCH = textwrap.dedent("""
    import sys, time
    from archetype.result import Result, TrialState
    from archetype.search import run_search
    from archetype.spec import RunSpec
    from archetype.store import Store
    from archetype.worker.evaluator import Evaluator
    from archetype.worker.executor import InlineExecutor

    class Quick(Evaluator):
        def evaluate(self, arch, budget, on_epoch=None):
            time.sleep(0.01)
            return Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.01})

    spec = RunSpec(space="conv-small", trials=int(sys.argv[2]), constraints=())
    with Store.open(sys.argv[1]) as store:
        print(run_search(spec, store, executor=InlineExecutor(), evaluator=Quick()).study.name)
""")


@pytest.mark.slow
def test_concurrent_searches_share_one_sqlite_file(tmp_path: Path) -> None:
    """Three searches at once, each naming its study itself: three studies, each whole."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    Store.open(url).close()
    searches = [subprocess.Popen([sys.executable, "-c", SEARCH, url, "12"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(3)]
    outputs = [search.communicate(timeout=300) for search in searches]
    assert [search.returncode for search in searches] == [0, 0, 0], [err for _, err in outputs]
    names = sorted(out.strip() for out, _ in outputs)
    assert names == ["conv-small-1", "conv-small-2", "conv-small-3"]
    with Store.open(url) as store:
        for name in names:
            assert store.get_study(name).status == "complete"
            assert [(t.number, t.state) for t in store.trials(name)] == [(n, TrialState.COMPLETE)
                                                                          for n in range(1, 13)]
