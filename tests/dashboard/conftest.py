"""A store filled once per session by a real small search on the digits data, plus compression runs and a failure."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.runtime.measure import MeasureProtocol
from archetype.runtime.training import TrainConfig
from archetype.search import SearchReport, run_search
from archetype.spec import RunSpec
from archetype.store import Store
from archetype.worker.evaluator import TrainingEvaluator
from archetype.worker.executor import InlineExecutor

BUDGET_MS = 5.0
SEARCH = RunSpec(
    space="conv-small", trials=5, epochs=1, seed=1, study="digits-small", target="cpu-torch",
    constraints=(Constraint.parse(f"latency_ms<={BUDGET_MS}"),),
)
QUICK = MeasureProtocol(warmup=5, blocks=3, min_block_ms=2.0, retries=0)  # as the worker tests time models
FAILING_STUDY = "with-failure"
RUN = "digits-small-compressed"


@dataclass(frozen=True)
class FilledStore:
    """The session's store, its URL and what the search reported."""

    url: str
    store: Store
    report: SearchReport
    run: str
    failing_study: str


def _add_compression_run(store: Store, study: str, number: int) -> None:
    store.create_compression_run(
        RUN, source=f"{study}:{number}", target="cpu-torch",
        budget={"latency_ms": None, "speedup": 4.0, "max_accuracy_drop": 0.02},
        pipeline=["prune", "tucker", "quantize"], source_trial=(study, number), out_dir="out/compressed",
    )
    store.add_compression_step(RUN, name="source", accepted=True,
                               metrics={"latency_ms": 0.09, "size_mb": 0.40, "accuracy": 0.93})
    store.add_compression_step(RUN, name="prune", accepted=True, seconds=3.0,
                               metrics={"latency_ms": 0.07, "size_mb": 0.25, "accuracy": 0.92})
    store.add_compression_step(RUN, name="tucker", accepted=False, seconds=2.0, message="accuracy drop 0.05 > 0.02",
                               metrics={"latency_ms": 0.05, "size_mb": 0.15, "accuracy": 0.87})
    store.add_compression_step(RUN, name="quantize", accepted=True, seconds=1.0,
                               metrics={"latency_ms": 0.04, "size_mb": 0.08, "accuracy": 0.915})
    store.finish_compression_run(RUN, "complete", report={"speedup": 2.25})


def _add_failing_study(store: Store, arch: dict, key: str) -> None:
    store.create_study(FAILING_STUDY, space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                       constraints=[Constraint.parse("latency_ms<=1")], spec={"space": "conv-small"})
    failure = Result(TrialState.FAILED, error="RuntimeError: out of memory at slot stage2.1")
    store.record_trial(FAILING_STUDY, arch, key, failure)
    store.record_trial(FAILING_STUDY, arch, key, Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.5}))


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilledStore]:
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'dashboard.db'}"
    with Store.open(url) as store:
        evaluator = TrainingEvaluator(
            target=SEARCH.target, constraints=SEARCH.constraints, seed=SEARCH.seed,
            train=TrainConfig(epochs=SEARCH.epochs, batch_size=32, lr=1e-2, seed=SEARCH.seed), protocol=QUICK,
        )
        report = run_search(SEARCH, store, executor=InlineExecutor(), evaluator=evaluator)
        source = report.front[0] if report.front else report.trials[0]
        _add_compression_run(store, report.study.name, source.number)
        _add_failing_study(store, report.trials[0].arch, report.trials[0].arch_key)
        yield FilledStore(url, store, report, RUN, FAILING_STUDY)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class LiveServer:
    """A dashboard served for real by uvicorn on 127.0.0.1."""

    base: str
    token: str | None


@pytest.fixture(scope="session")
def serve() -> Iterator[Callable[..., LiveServer]]:
    """Start a real dashboard server on a free port of 127.0.0.1 (stopped at the end of the session)."""
    import uvicorn

    from archetype.dashboard.app import create_app

    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(store: Store, token: str | None = None) -> LiveServer:
        port = _free_port()
        config = uvicorn.Config(create_app(store, token), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.05)
        return LiveServer(f"http://127.0.0.1:{port}", token)

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live(filled: FilledStore, serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(filled.store)


@pytest.fixture(scope="session")
def snapshot() -> Callable[[Store], tuple]:
    """Everything a request could change in a store, to check that none did."""

    def take(store: Store) -> tuple:
        studies = [(s.name, s.status, dict(s.counts), s.updated_at) for s in store.list_studies()]
        trials = [(t.number, t.state, t.values, t.error, t.arch_key) for s in studies for t in store.trials(s[0])]
        runs = [(r.name, r.status, r.report, len(r.steps)) for r in store.compression_runs()]
        return studies, trials, runs

    return take
