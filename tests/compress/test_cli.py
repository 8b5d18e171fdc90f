"""``archetype compress`` on the command line: bad input exits 2 leaving --out empty; a tiny model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from archetype.cli import main
from archetype.store import Store


def _compress(tmp_path: Path, model: str, *extra: str) -> list[str]:
    return ["compress", model, "--latency-ms", "0.001", "--data", "digits", "--out", str(tmp_path / "out"),
            "--storage", f"sqlite:///{tmp_path / 'store.db'}", *extra]


def _assert_bad_input(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archetype compress: error:") and needle in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a model")
    _assert_bad_input(tmp_path, _compress(tmp_path, str(path)), capsys, "not a saved PyTorch model")


def test_a_state_dict_file_asks_for_a_factory(tmp_path: Path, capsys) -> None:
    path = tmp_path / "weights.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    _assert_bad_input(tmp_path, _compress(tmp_path, str(path)), capsys, "holds a state dict")


def test_a_factory_that_does_not_import(tmp_path: Path, capsys) -> None:
    _assert_bad_input(tmp_path, _compress(tmp_path, "no_such_package.models:build"), capsys,
                      "cannot import 'no_such_package.models'")


def test_a_data_set_whose_shape_does_not_fit(tmp_path: Path, capsys, save_pt2) -> None:
    path = save_pt2(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), tmp_path / "cifar_model.pt2", (3, 32, 32))
    _assert_bad_input(tmp_path, _compress(tmp_path, str(path)), capsys, "cannot take its samples of shape (1, 8, 8)")


def test_bad_options(tmp_path: Path, capsys, trained_conv_net, save_pt2) -> None:
    path = save_pt2(trained_conv_net, tmp_path / "m.pt2", (1, 8, 8))
    _assert_bad_input(tmp_path, _compress(tmp_path, str(path), "--pipeline", "prune,shrink"), capsys,
                      "unknown step 'shrink'")
    _assert_bad_input(tmp_path, _compress(tmp_path, str(path), "--target", "tpu"), capsys, "unknown target 'tpu'")
    argv = _compress(tmp_path, str(path))
    argv[argv.index("--latency-ms") + 1] = "-1"
    _assert_bad_input(tmp_path, argv, capsys, "--latency-ms must be a positive")
    argv[argv.index("--latency-ms") : argv.index("--latency-ms") + 2] = ["--speedup", "0.5"]
    _assert_bad_input(tmp_path, argv, capsys, "--speedup must be a number >= 1")
    with pytest.raises(SystemExit) as exited:  # both budgets: argparse's usage error, one line
        main([*argv, "--latency-ms", "1"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and "not allowed with argument" in err
    _assert_bad_input(tmp_path, _compress(tmp_path, "nostudy:3"), capsys, "nostudy")


def test_a_budget_already_met_says_so_and_writes_nothing(tmp_path: Path, capsys, trained_conv_net, save_pt2) -> None:
    path = save_pt2(trained_conv_net, tmp_path / "m.pt2", (1, 8, 8))
    argv = _compress(tmp_path, str(path), "--target", "cpu-torch")
    argv[argv.index("--latency-ms") + 1] = "1000"
    assert main(argv) == 0
    assert "already meets the budget" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    argv[argv.index("--latency-ms") : argv.index("--latency-ms") + 2] = ["--speedup", "1"]
    assert main(argv) == 0
    assert "budget 1x faster than the source" in capsys.readouterr().err


@pytest.mark.slow
def test_compress_a_tiny_digits_model_end_to_end(tmp_path: Path, capsys, trained_conv_net) -> None:
    path = tmp_path / "m.pt"
    torch.save(trained_conv_net, path)
    argv = _compress(tmp_path, str(path), "--pipeline", "quantize", "--epochs", "1",
                     "--max-accuracy-drop", "5", "--name", "tiny", "--json", "--trust-pickle")
    code = main(argv)
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 1  # 0.001 ms is out of reach: the best reached is kept, written and stored as unmet
    assert report["status"] == "unmet" and report["run"] == "tiny"
    assert [s["name"] for s in report["steps"]] == ["source", "quantize"]
    assert "quantize: started" in captured.err and "left)" in captured.err  # progress on stderr with --json too
    assert (report["side_by_side"] is None) == (not report["steps"][1]["accepted"])  # timed only when changed
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt", "model.pt2", "report.json",
                                                     "report.txt"]
    assert isinstance(torch.load(out / "model.pt", weights_only=False), nn.Module)
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        run = store.compression_run("tiny")
    assert run.status.value == "unmet" and [s.name for s in run.steps] == ["source", "quantize"]
    assert "compression on cpu-ort" in (out / "report.txt").read_text()


@pytest.mark.slow
def test_a_study_trial_is_trained_first_and_linked(tmp_path: Path, capsys) -> None:
    from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
    from archetype.result import Result, TrialState

    arch = {"input": "Image[1,8,8]", "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 8}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}}]}
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        store.create_study("digits-1", space="conv-small", target="cpu-torch", objectives=DEFAULT_OBJECTIVES,
                           constraints=[Constraint.parse("latency_ms<=2")], spec={"epochs": 1})
        trial = store.record_trial("digits-1", arch, "k" * 16, Result(TrialState.COMPLETE, values={"accuracy": 0.9}))
    argv = _compress(tmp_path, f"digits-1:{trial.number}", "--target", "cpu-torch", "--name", "from-trial")
    argv[argv.index("--latency-ms") + 1] = "1000"
    assert main(argv) == 0
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "has no saved weights: its architecture was trained here on digits for 1 epochs" in err
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        run = store.compression_run("from-trial")
    assert (run.source_study, run.source_trial) == ("digits-1", trial.number)


@pytest.mark.slow
def test_the_default_pipeline_chooses_ratios_and_precision_together(tmp_path: Path, capsys, trained_conv_net) -> None:
    path = tmp_path / "m.pt"
    torch.save(trained_conv_net, path)  # a module with its layers: a .pt2 graph has no channel groups to prune
    argv = _compress(tmp_path, str(path), "--epochs", "1", "--max-accuracy-drop", "5", "--json", "--trust-pickle")
    assert main(argv) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [s["name"] for s in report["steps"]] == ["source", "depth", "joint", "quantize"]
    joint = report["steps"][2]
    assert set(joint["details"]["base_ms"]) == {"fp32", "int8"} and joint["details"]["tried"]
    assert "joint: timing and scoring channel group 1/" in captured.err  # progress on stderr with --json too
    if joint["accepted"]:  # 0.001 ms is out of reach: the fastest policy within 5 pp is kept
        assert report["final"]["latency_ms"] < report["source"]["latency_ms"]
        assert report["accuracy_drop_pp"] <= 5
