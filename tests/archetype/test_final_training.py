"""``archetype train STUDY:TRIAL``: a searched architecture trained and written whole as .pt2 and ONNX; bad input
is one line, exit code 2, nothing written and the store untouched."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import onnxruntime as ort
import pytest
import torch

from archetype.cli import main
from archetype.objectives import DEFAULT_OBJECTIVES, Constraint
from archetype.result import Result, TrialState
from archetype.runtime.data import load_dataset
from archetype.store import Store

TINY = {
    "input": "Image[1,8,8]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 8, "kernel": 3, "stride": 1}},
        {"slot": "stage1.block1", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "stage1.down", "op": "pool", "params": {"kind": "max"}},
        {"slot": "stage2.block1", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "stage2.block2", "op": "identity", "params": {}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
    ],
}
CUDA = torch.cuda.is_available()


@pytest.fixture
def searched(tmp_path):
    """A store with a study on digits whose trial 1 is the tiny conv-small network."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    with Store.open(url) as store:
        store.create_study("found", space="conv-small", target="cpu-ort", objectives=DEFAULT_OBJECTIVES,
                           constraints=(Constraint.parse("latency_ms<=2"),),
                           spec={"space": "conv-small", "data": "digits", "seed": 0, "epochs": 1})
        store.record_trial("found", TINY, "1" * 16, Result(TrialState.COMPLETE, {"accuracy": 0.9, "latency_ms": 0.1}))
    return tmp_path / "s.db", url


def _dump(path) -> list:
    with sqlite3.connect(path) as db:
        return [db.execute(f"select * from {t} order by id").fetchall() for t in ("studies", "trials", "trial_metrics")]


@pytest.mark.slow
def test_train_writes_a_pt2_and_an_onnx_model_that_compute_the_reported_accuracy(searched, tmp_path, capsys):
    _, url = searched
    out = tmp_path / "final"
    assert main(["train", "found:1", "--epochs", "2", "--recipe", "quick", "--device", "cpu", "--out", str(out),
                 "--storage", url, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt2", "report.json"]
    assert f"next: archetype compress {out}/model.pt2 --latency-ms 2 --data digits --target cpu-ort" in captured.err
    assert report["epochs"] == 2 and report["recipe"] == "quick" and report["latency_ms"] > 0
    assert json.loads((out / "report.json").read_text())["test_accuracy"] == report["test_accuracy"]

    digits = load_dataset("digits")
    exported = torch.export.load(out / "model.pt2").module()  # eval mode, as exported
    correct = (exported(digits.test.x).argmax(1) == digits.test.y).float().mean().item()
    assert correct == pytest.approx(report["test_accuracy"]) and correct > 0.5
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = digits.test.x[:2]  # the ONNX file takes the batch it was exported with
    expected = exported(x).detach().numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["found:7"], "no trial number 7 in study 'found'"),
        (["found"], "TRIAL 'found': expected STUDY:NUMBER"),
        (["found:1", "--epochs", "0"], "--epochs must be a positive integer"),
        (["found:1", "--recipe", "fast"], "--recipe 'fast': unknown recipe"),
        (["found:1", "--device", "tpu"], "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (["found:1", "--data", "mnist-fashion"], "unknown data set"),
        pytest.param(["found:1", "--device", "cuda"], "--device cuda: this machine has no CUDA device",
                     marks=pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")),
    ],
)
def test_bad_train_input_is_one_line_and_writes_nothing(searched, tmp_path, capsys, argv, message):
    path, url = searched
    before = _dump(path)
    out = tmp_path / "never"
    assert main(["train", *argv, "--out", str(out), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists() and _dump(path) == before


def test_train_refuses_an_out_folder_that_holds_files(searched, tmp_path, capsys):
    _, url = searched
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", "found:1", "--out", str(out), "--storage", url]) == 2
    assert "already exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", [
    ["search", "--space", "conv-small", "--latency-ms", "1", "--device", "cuda"],
    ["search", "--space", "conv-small", "--latency-ms", "1", "--gpus-per-trial", "0.5"],
    ["compress", "found:1", "--latency-ms", "1", "--device", "cuda"],
])
def test_cuda_on_a_machine_without_it_stops_search_and_compress_before_anything_is_stored(searched, capsys,
                                                                                          command):
    path, url = searched
    before = _dump(path)
    assert main([*command, "--storage", url]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no CUDA device" in err, err
    assert _dump(path) == before
