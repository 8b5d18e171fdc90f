"""The JSON API on a store filled by a real small search: the same trials, front and numbers as the store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from archetype.dashboard.app import create_app
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.pareto import feasible_front, summarise_front
from archetype.result import Result, TrialState
from archetype.store import Store


@pytest.fixture(scope="module")
def client(filled) -> TestClient:
    return TestClient(create_app(filled.store))


def _feasible(trials, constraints):
    return [t for t in trials if t.state is TrialState.COMPLETE and all(c.satisfied(t.values) for c in constraints)]


def test_the_overview_lists_every_study_with_counts_and_best_within_budget(client, filled) -> None:
    data = client.get("/api/studies").json()
    rows = {row["name"]: row for row in data["studies"]}
    assert set(rows) == {filled.report.study.name, filled.failing_study}
    searched = rows[filled.report.study.name]
    trials = filled.store.trials(searched["name"])
    assert searched["total"] == len(trials) == 5 and searched["status"] == "complete"
    assert searched["budget"] == ["latency_ms<=5"] and searched["target"] == "cpu-torch"
    feasible = _feasible(trials, filled.report.study.constraints)
    assert searched["best"] == (max(t.values["accuracy"] for t in feasible) if feasible else None)
    assert rows[filled.failing_study]["counts"] == {"failed": 1, "complete": 1}
    [run] = data["compressions"]
    assert run["name"] == filled.run and run["steps"] == 4 and run["source_study"] == filled.report.study.name


def test_the_study_view_holds_the_stored_front_and_every_measured_trial(client, filled) -> None:
    study = filled.report.study
    view = client.get(f"/api/studies/{study.name}").json()
    trials = filled.store.trials(study.name)
    front = feasible_front(trials, study.objectives, study.constraints)
    assert view["front"] == sorted(t.number for t in front)
    assert {p["number"] for p in view["points"] if p["on_front"]} == set(view["front"])
    by_number = {t.number: t for t in trials}
    for point in view["points"]:
        trial = by_number[point["number"]]
        assert point["values"] == pytest.approx(trial.values)
        feasible = trial.state is TrialState.COMPLETE and all(c.satisfied(trial.values) for c in study.constraints)
        assert point["feasible"] == feasible
    assert {"latency_ms", "params", "macs"} <= set(view["metrics"])
    steps = view["progress"]  # the first trial, each trial that changed the hypervolume or the best, the last
    assert steps[0]["number"] == trials[0].number and steps[-1]["number"] == trials[-1].number
    assert [p["number"] for p in steps] == sorted({p["number"] for p in steps})
    changes = [(p["hypervolume"], p["best"]) for p in steps[1:-1]]
    assert all(change != before for change, before in zip(changes, [(steps[0]["hypervolume"], steps[0]["best"]),
                                                                 *changes], strict=False))
    slots = len(trials[0].arch["slots"])
    assert sum(o["count"] for o in view["operators"]) == len(front) * slots


def test_progress_ends_at_the_hypervolume_and_best_of_the_final_front(filled) -> None:
    study = filled.report.study
    client = TestClient(create_app(filled.store))
    view = client.get(f"/api/studies/{study.name}").json()
    trials = filled.store.trials(study.name)
    feasible = _feasible(trials, study.constraints)
    last = view["progress"][-1]
    if not feasible:
        assert last["best"] is None and last["hypervolume"] is None
        return
    assert last["best"] == max(t.values["accuracy"] for t in feasible)
    reference = view["hypervolume_reference"]
    assert reference["latency_ms"] == 5.0  # the latency budget bounds the hypervolume
    front = summarise_front(trials, study.objectives, study.constraints)  # what 'archetype front' prints
    assert reference == pytest.approx(front.reference)
    assert last["hypervolume"] == pytest.approx(front.hypervolume)
    bests = [p["best"] for p in view["progress"] if p["best"] is not None]
    assert bests == sorted(bests)  # the best so far never gets worse


def test_the_trials_table_sorts_filters_and_pages_like_the_store(client, filled) -> None:
    study = filled.report.study
    trials = filled.store.trials(study.name)
    url = f"/api/studies/{study.name}/trials"
    by_accuracy = client.get(url, params={"sort": "accuracy", "order": "desc"}).json()
    ranked = sorted((t for t in trials if "accuracy" in t.values), key=lambda t: (t.values["accuracy"], t.number),
                    reverse=True)  # ties in the order asked for
    assert [r["number"] for r in by_accuracy["rows"]][: len(ranked)] == [t.number for t in ranked]
    within = client.get(url, params={"budget": "within"}).json()
    assert {r["number"] for r in within["rows"]} == {t.number for t in _feasible(trials, study.constraints)}
    assert all(r["within_budget"] for r in within["rows"])
    first, second = (client.get(url, params={"limit": 3, "offset": o}).json() for o in (0, 3))
    assert first["total"] == second["total"] == 5
    assert [r["number"] for r in first["rows"] + second["rows"]] == [1, 2, 3, 4, 5]
    failed = client.get(f"/api/studies/{filled.failing_study}/trials", params={"state": "failed"}).json()
    assert [r["error"] for r in failed["rows"]] == ["RuntimeError: out of memory at slot stage2.1"]


def test_a_trial_shows_its_architecture_graph_slots_metrics_and_compressions(client, filled) -> None:
    run = filled.store.compression_run(filled.run)
    trial = filled.store.trial(run.source_study, run.source_trial)
    view = client.get(f"/api/studies/{run.source_study}/trials/{trial.number}").json()
    assert [s["slot"] for s in view["slots"]] == [s["slot"] for s in trial.arch["slots"]]
    assert [s["op"] for s in view["slots"]] == [s["op"] for s in trial.arch["slots"]]
    assert all(s["category"] and s["n_params"] is not None for s in view["slots"])
    assert view["svg"].startswith("<svg") and view["graph_error"] is None
    for slot in trial.arch["slots"]:
        assert f'data-node="{slot["slot"]}"' in view["svg"]
    assert view["values"] == pytest.approx(trial.values) and view["target"] == "cpu-torch"
    assert view["fingerprint"] == trial.fingerprint and "torch" in view["fingerprint"]
    assert view["budget"][0]["constraint"] == "latency_ms<=5"
    assert view["compressions"] == [filled.run]
    failed = client.get(f"/api/studies/{filled.failing_study}/trials/1").json()
    assert failed["state"] == "failed" and "out of memory" in failed["error"]


def test_a_compression_run_becomes_waterfalls_of_kept_steps(client, filled) -> None:
    view = client.get(f"/api/compressions/{filled.run}").json()
    assert view["source_study"] == filled.report.study.name and view["status"] == "complete"
    falls = {w["metric"]: w for w in view["waterfalls"]}
    assert list(falls) == ["latency_ms", "size_mb", "accuracy"]
    latency = falls["latency_ms"]
    assert latency["labels"] == ["source", "1. prune", "2. tucker", "3. quantize", "kept"]
    assert latency["measures"] == ["absolute", "relative", "relative", "relative", "total"]
    assert latency["values"] == pytest.approx([0.09, -0.02, 0.0, -0.03, 0.04])
    assert latency["notes"][2] == "rejected: accuracy drop 0.05 > 0.02"
    assert falls["accuracy"]["values"][-1] == pytest.approx(0.915)
    assert sum(falls["size_mb"]["values"][:-1]) == pytest.approx(falls["size_mb"]["values"][-1])


def test_a_running_study_is_served_fresh_after_each_stored_trial(tmp_path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'live.db'}") as store:
        store.create_study("live", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=[Constraint.parse("latency_ms<=1")], spec={})
        client = TestClient(create_app(store))
        arch = {"input": "Image[1,8,8]", "slots": []}
        store.record_trial("live", arch, "a" * 16, Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.5}))
        assert client.get("/api/studies/live").json()["front"] == [1]
        store.record_trial("live", arch, "b" * 16, Result(TrialState.COMPLETE, {"accuracy": 0.7, "latency_ms": 0.4}))
        view = client.get("/api/studies/live").json()
        assert view["front"] == [2] and [p["number"] for p in view["points"]] == [1, 2]


def test_missing_things_are_404_and_pages_and_plotly_are_served(client, filled) -> None:
    assert client.get("/api/studies/nope").status_code == 404
    assert client.get(f"/api/studies/{filled.report.study.name}/trials/99").status_code == 404
    assert client.get("/api/compressions/nope").status_code == 404
    assert client.get("/studies/nope").status_code == 404
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and "plotly" in plotly.text[:2000].lower() and len(plotly.content) > 1_000_000
    page = client.get(f"/studies/{filled.report.study.name}")
    assert page.status_code == 200 and 'data-page="study"' in page.text and "/static/plotly.min.js" in page.text


def test_the_openapi_schema_documents_read_only_api_routes(client) -> None:
    schema = client.get("/api/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {"/api/studies", "/api/studies/{name}", "/api/studies/{name}/trials",
                          "/api/studies/{name}/trials/{number}", "/api/compressions/{name}"}
    assert all(set(methods) == {"get"} for methods in paths.values())
    assert "StudyView" in schema["components"]["schemas"]
