"""The pages in a real browser: Playwright driving Debian's Chromium against a real dashboard server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.pareto import feasible_front, summarise_front
from archetype.result import Result, TrialState
from archetype.store import Store

pytestmark = pytest.mark.slow

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
LOADED = "body[data-loaded='true']"


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = _chromium()
    if path is None:
        reason = "Debian's chromium is not installed (make setup installs it as root: apt-get install chromium)"
        print(f"skipping the browser tests: {reason}")
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("ARCHETYPE_SCREENSHOTS")  # a folder to keep them in; else a pytest temporary folder
    folder = Path(kept) if kept else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], errors


def test_the_studies_page_lists_the_studies_and_runs(page, live, filled, screenshots) -> None:
    page.goto(f"{live.base}/")
    page.wait_for_selector(LOADED)
    listed = page.eval_on_selector_all("#studies tbody tr", "rows => rows.map(r => r.dataset.study)")
    assert sorted(listed) == sorted([filled.report.study.name, filled.failing_study])
    assert page.eval_on_selector_all("#compressions tbody tr", "rows => rows.map(r => r.dataset.run)") == [filled.run]
    page.screenshot(path=screenshots / "studies.png", full_page=True)


def test_the_study_page_plots_the_stored_front(page, live, filled, screenshots) -> None:
    study = filled.report.study
    page.goto(f"{live.base}/studies/{study.name}")
    page.wait_for_selector(LOADED)
    plotted = page.evaluate(
        "() => Object.fromEntries(document.getElementById('front-plot').data.map(t => [t.name, t.customdata]))"
    )
    trials = filled.store.trials(study.name)
    front = feasible_front(trials, study.objectives, study.constraints)
    assert sorted(plotted["Pareto front"]) == sorted(t.number for t in front)
    summary = summarise_front(trials, study.objectives, study.constraints)  # what 'archetype front' prints
    assert summary.front
    assert f"hypervolume {float(f'{summary.hypervolume:.4g}')!r}" in page.inner_text("#study-info")
    assert "latency_ms 5" in page.inner_text("#study-info")  # the reference point: the latency budget
    shown = [n for numbers in plotted.values() for n in numbers]
    assert sorted(shown) == [t.number for t in trials if "accuracy" in t.values and "latency_ms" in t.values]
    rows = page.eval_on_selector_all("#trials tbody tr", "rows => rows.map(r => Number(r.dataset.number))")
    assert rows == [t.number for t in trials]
    page.click("#trials th[data-sort='latency_ms']")
    page.wait_for_function("() => document.body.dataset.trialsLoaded === '2'")
    rows = page.eval_on_selector_all("#trials tbody tr", "rows => rows.map(r => Number(r.dataset.number))")
    timed = sorted((t for t in trials if "latency_ms" in t.values), key=lambda t: (t.values["latency_ms"], t.number))
    assert rows[: len(timed)] == [t.number for t in timed]
    page.screenshot(path=screenshots / "study.png", full_page=True)
    clicked = (plotted["Pareto front"] or shown)[0]
    click = "n => document.getElementById('front-plot').emit('plotly_click', {points: [{customdata: n}]})"
    page.evaluate(click, clicked)
    page.wait_for_url(f"**/studies/{study.name}/trials/{clicked}")


def test_the_trial_page_draws_the_architecture_and_its_slots(page, live, filled, screenshots) -> None:
    run = filled.store.compression_run(filled.run)
    trial = filled.store.trial(run.source_study, run.source_trial)
    page.goto(f"{live.base}/studies/{run.source_study}/trials/{trial.number}")
    page.wait_for_selector(LOADED)
    nodes = page.eval_on_selector_all("#arch-graph svg g.node", "nodes => nodes.map(n => n.dataset.node)")
    slots = [s["slot"] for s in trial.arch["slots"]]
    assert nodes == ["input", *slots, "output"]
    rows = page.eval_on_selector_all("#slots tbody tr", "rows => rows.map(r => r.dataset.slot)")
    assert rows == slots
    assert page.inner_text("#compressions") == filled.run
    page.screenshot(path=screenshots / "trial.png", full_page=True)
    page.goto(f"{live.base}/studies/{filled.failing_study}/trials/1")
    page.wait_for_selector(LOADED)
    assert "out of memory at slot stage2.1" in page.inner_text("#trial-error")


def test_the_compression_page_shows_the_waterfall(page, live, filled, screenshots) -> None:
    page.goto(f"{live.base}/compressions/{filled.run}")
    page.wait_for_selector(LOADED)
    traces = page.evaluate(
        "() => document.getElementById('waterfall-plot').data.map(t => [t.type, t.name, t.y])"
    )
    assert [(kind, name) for kind, name, _ in traces] == [
        ("waterfall", "latency_ms"), ("waterfall", "size_mb"), ("waterfall", "accuracy")]
    assert traces[0][2] == pytest.approx([0.09, -0.02, 0.0, -0.03, 0.04])
    assert page.locator("#waterfall-plot .waterfalllayer .trace").count() == 3
    assert "budget speedup 4, max_accuracy_drop 0.02" in page.inner_text("#run-info")  # unset limits left out
    source = page.get_attribute("#run-info a", "href")
    run = filled.store.compression_run(filled.run)
    assert source == f"/studies/{run.source_study}/trials/{run.source_trial}"
    page.screenshot(path=screenshots / "compression.png", full_page=True)


def test_a_running_study_updates_without_a_reload(page, serve, tmp_path, screenshots) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'running.db'}") as store:
        store.create_study("running", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=[Constraint.parse("latency_ms<=1")], spec={})
        arch = {"input": "Image[1,8,8]", "slots": []}
        store.record_trial("running", arch, "a" * 16, Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.5}))
        served = serve(store, token="tok")
        page.goto(f"{served.base}/studies/running?token=tok")
        page.wait_for_selector(LOADED)
        assert page.inner_text("#live") == "● live"
        store.record_trial("running", arch, "b" * 16, Result(TrialState.COMPLETE, {"accuracy": 0.8, "latency_ms": 0.6}))
        page.wait_for_function("() => document.body.dataset.updates === '1'", timeout=15_000)
        front = page.evaluate(
            "() => document.getElementById('front-plot').data.find(t => t.name === 'Pareto front').customdata"
        )
        assert sorted(front) == [1, 2]
        assert page.eval_on_selector_all("#trials tbody tr", "rows => rows.length") == 2
        page.screenshot(path=screenshots / "running.png", full_page=True)
