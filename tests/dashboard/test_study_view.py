"""The study view and trials table of a study with many trials: operators read as stored, architectures not decoded."""

from __future__ import annotations

import json

from archetype.dashboard import queries
from archetype.pareto import feasible_front, is_feasible
from archetype.store import Store


def _ops_line(arch_json: str) -> str:
    arch = json.loads(arch_json)
    return " > ".join(s["op"] for s in arch.get("slots", []) if s.get("op") != "identity")


def test_the_study_view_decodes_only_the_front_members(listed_study, decodes) -> None:
    url, study = listed_study
    with Store.open(url) as store:
        view = queries.study_view(store, study)
        trials = store.trials(study)
    front = feasible_front(trials, store.get_study(study).objectives, store.get_study(study).constraints)
    assert decodes.decoded == len(front)  # the operators the front chose; hover texts are the stored operators
    constraints = store.get_study(study).constraints
    expected = [
        (t.number, t.state.value, t.values, is_feasible(t, constraints), _ops_line(t.arch_json)) for t in trials
        if t.values
    ]
    assert [(p.number, p.state, p.values, p.feasible, p.summary) for p in view.points] == expected
    assert view.front == sorted(t.number for t in front) and view.front
    assert {p.number for p in view.points if p.on_front} == set(view.front)
    assert view.study.counts == {s: sum(t.state.value == s for t in trials) for s in {t.state.value for t in trials}}


def test_a_trials_table_page_decodes_no_architecture(listed_study, decodes) -> None:
    url, study = listed_study
    with Store.open(url) as store:
        table = queries.trial_table(store, study, sort="number", offset=10, limit=7)
        trials = store.trials(study)[10:17]
    assert decodes.decoded == 0
    assert table.total == 40 and table.offset == 10
    assert [(r.number, r.summary, r.error) for r in table.rows] == [
        (t.number, _ops_line(t.arch_json), t.error) for t in trials
    ]
