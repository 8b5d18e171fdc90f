"""Bad input on the command line: one line on stderr, exit code 2, the store untouched."""

from __future__ import annotations

import sqlite3

import pytest

from archetype.cli import main
from archetype.objectives import DEFAULT_OBJECTIVES
from archetype.result import Result, TrialState
from archetype.store import Store


@pytest.fixture
def filled_db(tmp_path):
    """A store holding one study with one finished trial."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Store.open(url) as store:
        store.create_study("kept", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=(), spec={"space": "conv-small"})
        store.record_trial("kept", {"input": "Image[1,8,8]", "slots": []}, "0" * 16,
                           Result(TrialState.COMPLETE, {"accuracy": 0.5, "latency_ms": 0.1}))
    return tmp_path / "a.db", url


def _dump(path) -> list:
    with sqlite3.connect(path) as db:
        return [db.execute(f"select * from {t} order by id").fetchall() for t in ("studies", "trials", "trial_metrics")]


def _run_bad(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--space", "no-such-space"], "unknown space 'no-such-space'"),
        (["--space", "conv-small", "--trials", "0"], "trials must be a positive integer, got 0"),
        (["--space", "conv-small", "--latency-ms", "-1"], "--latency-ms must be a positive"),
        (["--space", "conv-small", "--latency-ms", "inf"], "--latency-ms must be a positive"),
        (["--space", "conv-small", "--latency-ms", "nan"], "--latency-ms must be a positive"),
        (["--space", "conv-small", "--latency-ms", "1", "--trials", "1000000000"], "trials must be at most"),
        (["--space", "conv-small", "--latency-ms", "1", "--epochs", "99999999"], "epochs must be at most"),
        (["--space", "conv-small", "--data", "cifar1000"], "unknown data set"),
        (["--space", "conv-small", "--strategy", "magic"], "unknown strategy 'magic'"),
    ],
)
def test_bad_search_input(filled_db, capsys, extra, message):
    path, url = filled_db
    before = _dump(path)
    argv = ["search", "--storage", url, "--latency-ms", "0.5", *extra]
    assert message in _run_bad(argv, capsys)
    assert _dump(path) == before


def test_malformed_space_yaml_names_file_and_line(filled_db, tmp_path, capsys):
    path, url = filled_db
    before = _dump(path)
    space = tmp_path / "space.yaml"
    space.write_text("slots:\n  - name: stem\n    candidates: [\n")
    err = _run_bad(["search", "--storage", url, "--space", str(space), "--latency-ms", "1"], capsys)
    assert "space.yaml:" in err
    assert _dump(path) == before


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////no/such/folder/x.db",
        "postgresql+psycopg://user:secret@127.0.0.1:1/archetype",
        "notadialect://x",
    ],
)
def test_unusable_storage(url, capsys):
    err = _run_bad(["studies", "--storage", url], capsys)
    assert "storage" in err
    assert "secret" not in err


def test_storage_that_is_not_a_database_is_left_alone(tmp_path, capsys):
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"these are my notes, not a database" * 10)
    before = junk.read_bytes()
    _run_bad(["studies", "--storage", f"sqlite:///{junk}"], capsys)
    assert junk.read_bytes() == before


def test_show_unknown_study(filled_db, capsys):
    _, url = filled_db
    assert "no study named 'ghost'" in _run_bad(["show", "ghost", "--storage", url], capsys)


@pytest.mark.parametrize("argv", [["search", "--trials"], ["search", "--trials", "x"], ["nosuchcommand"]])
def test_usage_error_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_studies_and_show_print_what_is_stored(filled_db, capsys):
    _, url = filled_db
    assert main(["studies", "--storage", url]) == 0
    assert "kept" in capsys.readouterr().out
    assert main(["show", "kept", "--storage", url, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"accuracy": 0.5' in out and '"front": [\n    1\n  ]' in out


@pytest.mark.parametrize("width, needle", [
    (10**8, "width=100000000) on Image[1,8,8] alone has 1.1e+09 parameters, over max_params 1e+08"),
    (10**6, "width=1000000) on Image[1,8,8] alone outputs 256 MB per sample"),
])
def test_an_absurd_width_is_refused_before_anything_is_stored(filled_db, tmp_path, capsys, width, needle):
    path, url = filled_db
    before = _dump(path)
    space = tmp_path / "wide.yaml"
    space.write_text("slots:\n  - name: stem\n    candidates:\n"
                     f"      - {{op: conv_bn_act, width: [8, {width}], kernel: 3}}\n"
                     "  - name: head\n    candidates: [{op: classifier_head, classes: $classes}]\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"space: {space}\nmax_activation_mb: 100\n")
    err = _run_bad(["search", "--storage", url, "--spec", str(spec), "--latency-ms", "1"], capsys)
    assert "slot 'stem' (conv_bn_act" in err and needle in err
    assert _dump(path) == before


class _Prepared(BaseException):
    """The search validated its spec; the test stops it before any work."""


def test_the_time_budget_flag_reaches_the_run_spec(filled_db, monkeypatch):
    import archetype.search

    def capture(spec):
        raise _Prepared(spec)

    monkeypatch.setattr(archetype.search, "prepare_search", capture)
    _, url = filled_db
    with pytest.raises(_Prepared) as caught:
        main(["search", "--storage", url, "--space", "conv-small", "--latency-ms", "1", "--time-budget", "1h30m"])
    assert caught.value.args[0].time_budget_s == 5400.0


@pytest.mark.parametrize("given", ["2x", "-1h", "0"])
def test_a_bad_time_budget_is_refused_in_one_line(filled_db, capsys, given):
    path, url = filled_db
    before = _dump(path)
    err = _run_bad(["search", "--storage", url, "--space", "conv-small", "--latency-ms", "1", f"--time-budget={given}"],
                   capsys)
    assert "time_budget must be a positive duration" in err
    assert _dump(path) == before


def test_help_shows_the_defaults_the_models_define(capsys):
    from archetype.compress.command import CompressOptions
    from archetype.spec import RunSpec

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    spec = RunSpec(space="s")
    for flag, value in (("--trials TRIALS", spec.trials), ("--epochs EPOCHS", spec.epochs),
                        ("--retries RETRIES", spec.retries), ("--latency-margin SHARE", spec.latency_margin)):
        help_text = shown.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert help_text.endswith(f"(default {value})"), (flag, help_text)
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"(default {','.join(CompressOptions.pipeline)})" in shown
