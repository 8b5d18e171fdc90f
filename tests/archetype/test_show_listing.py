"""``archetype show``: the whole listing or a page of it, in JSON without decoding the architectures."""

from __future__ import annotations

import json

import pytest

from archetype.cli import main
from archetype.pareto import feasible_front
from archetype.store import Store


def _expected(url: str, study: str) -> tuple[list[dict[str, object]], list[int]]:
    with Store.open(url) as store:
        trials = store.trials(study)
        record = store.get_study(study)
    rows = [
        {"number": t.number, "state": t.state.value, "values": t.values, "error": t.error, "arch_key": t.arch_key,
         "arch": t.arch, "timings": t.timings, "attempt": t.attempt, "target": t.target}
        for t in trials
    ]
    return rows, [t.number for t in feasible_front(trials, record.objectives, record.constraints)]


def test_show_json_lists_every_trial_as_stored_without_decoding_one(listed_study, decodes, capsys) -> None:
    url, study = listed_study
    assert main(["show", study, "--storage", url, "--json"]) == 0
    assert decodes.decoded == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    rows, front = _expected(url, study)
    assert shown["trials"] == rows
    assert shown["front"] == front and front
    assert shown["total"] == 40 and shown["name"] == study
    assert "next: archetype front listed" in captured.err


@pytest.mark.parametrize("offset, limit", [(10, 5), (35, 10), (0, 1)])
def test_show_json_pages_the_trials_and_keeps_the_whole_front(listed_study, capsys, offset, limit) -> None:
    url, study = listed_study
    assert main(["show", study, "--storage", url, "--json", "--offset", str(offset), "--limit", str(limit)]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    rows, front = _expected(url, study)
    assert shown["trials"] == rows[offset:offset + limit]
    assert shown["front"] == front and shown["total"] == 40
    if offset + limit < 40:
        assert f"--offset {offset + limit} --limit {limit}" in captured.err


def test_show_prints_a_page_with_operator_lines_without_decoding(listed_study, decodes, capsys) -> None:
    url, study = listed_study
    assert main(["show", study, "--storage", url, "--offset", "10", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert decodes.decoded == 0
    assert "trials 11-15 of 40" in out
    with Store.open(url) as store:
        page = store.trials(study, offset=10, limit=5)
        others = store.trials(study, offset=20, limit=5)
    for trial in page:
        assert " > ".join(op for op in trial.operators if op != "identity")[:30] in out
    assert not any(f"trial {t.number} failed" in out for t in others if t.error)


@pytest.mark.parametrize("flag, value", [("--limit", "0"), ("--offset", "-3")])
def test_a_bad_page_is_one_line_and_exit_2(listed_study, capsys, flag, value) -> None:
    url, study = listed_study
    assert main(["show", study, "--storage", url, flag, value]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and flag in err
