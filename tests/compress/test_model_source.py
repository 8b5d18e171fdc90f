"""Model files are data: .pt2 and .onnx load without running code from them; a pickled module needs an opt-in."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.export.pt2_archive.constants import OPAQUE_OBJ_FILENAME_PREFIX

from archetype.cli import main
from archetype.compress.model_source import TRUST_PICKLE_ENV, load_model
from archetype.compress.quantization import OnnxSourceModel
from archetype.errors import SpecError


class FileCreatingPayload:
    """Unpickling this creates ``marker``: what a hostile model file would do (here, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _torch_saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rewritten(source: Path, target: Path, edit: Callable[[str, bytes], bytes | None]) -> Path:
    """A copy of the zip ``source`` with each member passed through ``edit`` (None keeps it as it is)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for name in old.namelist():
            data = old.read(name)
            changed = edit(name, data)
            new.writestr(name, data if changed is None else changed)
    return target


def _compress_argv(tmp_path: Path, model: str, *extra: str) -> list[str]:
    return ["compress", model, "--latency-ms", "0.001", "--out", str(tmp_path / "out"),
            "--storage", f"sqlite:///{tmp_path / 'store.db'}", *extra]


@pytest.fixture
def pt2_file(tmp_path: Path, trained_conv_net: nn.Module, save_pt2) -> Path:
    return save_pt2(trained_conv_net, tmp_path / "model.pt2", (1, 8, 8))


def test_a_pt2_file_loads_and_computes_as_the_model(pt2_file: Path, trained_conv_net: nn.Module, digits) -> None:
    loaded = load_model(str(pt2_file))
    x = digits.val.x[:5]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), trained_conv_net(x))
    assert loaded.source == str(pt2_file.absolute()) and not loaded.is_onnx


@pytest.mark.parametrize("container", ["torch.save", "bare pickle"])
def test_a_hostile_pickle_is_refused_without_running_it(tmp_path: Path, capsys, container: str) -> None:
    marker = tmp_path / "created-by-the-payload"
    path = tmp_path / "model.pt"
    payload = FileCreatingPayload(marker)
    path.write_bytes(_torch_saved(payload) if container == "torch.save" else pickle.dumps(payload, protocol=4))
    assert main(_compress_argv(tmp_path, str(path))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "can run any code" in err and "--trust-pickle" in err
    assert ".pt2" in err and ".onnx" in err and TRUST_PICKLE_ENV in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_pickled_module_loads_with_the_opt_in(tmp_path: Path, trained_conv_net: nn.Module, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    torch.save(trained_conv_net, path)
    with pytest.raises(SpecError, match="pickled whole module"):
        load_model(str(path))
    assert isinstance(load_model(str(path), trust_pickle=True).model, nn.Sequential)
    monkeypatch.setenv(TRUST_PICKLE_ENV, "1")
    assert isinstance(load_model(str(path)).model, nn.Sequential)


def test_state_dicts_load_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-payload"
    weights = tmp_path / "weights.pt"
    weights.write_bytes(_torch_saved({"weight": FileCreatingPayload(marker)}))
    with pytest.raises(SpecError, match="--weights"):
        load_model("torch.nn:Identity", weights=str(weights))
    assert not marker.exists()


def test_a_pickled_weight_inside_a_pt2_is_not_unpickled(tmp_path: Path, pt2_file: Path) -> None:
    marker = tmp_path / "created-by-the-payload"

    def edit(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"]["0.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return _torch_saved(FileCreatingPayload(marker))
        return None

    hostile = _rewritten(pt2_file, tmp_path / "hostile.pt2", edit)
    with pytest.raises(SpecError, match=r"hostile\.pt2"):
        load_model(str(hostile))
    assert not marker.exists()


def test_an_opaque_object_inside_a_pt2_is_not_unpickled(tmp_path: Path, pt2_file: Path) -> None:
    marker = tmp_path / "created-by-the-payload"
    name_in_archive = f"{OPAQUE_OBJ_FILENAME_PREFIX}0"

    def edit(name: str, data: bytes) -> bytes | None:
        if name.endswith("model_constants_config.json"):
            entry = {"path_name": name_in_archive, "is_param": False, "use_pickle": True, "tensor_meta": None}
            return json.dumps({"config": {"hostile": entry}}).encode()
        return None

    hostile = _rewritten(pt2_file, tmp_path / "hostile.pt2", edit)
    with zipfile.ZipFile(hostile, "a") as archive:
        folder = next(n for n in archive.namelist() if n.endswith("model_constants_config.json")).rsplit("/", 1)[0]
        archive.writestr(f"{folder}/{name_in_archive}", pickle.dumps(FileCreatingPayload(marker)))
    with pytest.raises(SpecError, match=r"hostile\.pt2"):
        load_model(str(hostile))
    assert not marker.exists()


@pytest.mark.parametrize("field, value, needle", [
    ("expr_str", "__import__('os').system('touch {marker}')", "shape expression"),
    ("expr_str", "open('{marker}', 'w')", "shape expression"),
    ("target", "torch.os.system", "operator"),
])
def test_code_in_a_pt2_graph_is_refused(tmp_path: Path, save_pt2, field: str, value: str, needle: str) -> None:
    marker = tmp_path / "created-by-the-payload"
    pt2 = save_pt2(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), tmp_path / "model.pt2", (1, 8, 8))
    value = value.format(marker=marker)

    def edit(name: str, data: bytes) -> bytes | None:
        if not name.endswith("models/model.json"):
            return None
        text = data.decode()
        if field == "expr_str":
            assert '"expr_str": "' in text  # a dynamic batch carries shape expressions
            head, _, tail = text.partition('"expr_str": "')
            return (head + '"expr_str": ' + json.dumps(value) + tail[tail.index('"') + 1:]).encode()
        return text.replace('"torch.ops.aten.linear.default"', json.dumps(value), 1).encode()

    hostile = _rewritten(pt2, tmp_path / "hostile.pt2", edit)
    with pytest.raises(SpecError, match=needle):
        load_model(str(hostile)).model(torch.zeros(2, 1, 8, 8))
    assert not marker.exists()


def test_an_onnx_model_runs_in_onnx_runtime(tmp_path: Path, trained_conv_net: nn.Module, digits) -> None:
    from archetype.runtime.onnx_export import export_onnx

    path = export_onnx(trained_conv_net, digits.train.x[:1], tmp_path / "model.onnx")
    loaded = load_model(str(path))
    assert loaded.is_onnx and isinstance(loaded.model, OnnxSourceModel)
    assert loaded.model.params >= sum(p.numel() for p in trained_conv_net.parameters()) - 3 * 2 * 16
    x = digits.val.x[:8]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), trained_conv_net(x), atol=1e-4, rtol=1e-3)


def test_an_onnx_model_takes_only_the_onnx_steps(tmp_path: Path, capsys, trained_conv_net, digits) -> None:
    from archetype.runtime.onnx_export import export_onnx

    path = export_onnx(trained_conv_net, digits.train.x[:1], tmp_path / "model.onnx")
    assert main(_compress_argv(tmp_path, str(path), "--pipeline", "prune,quantize")) == 2
    err = capsys.readouterr().err
    assert "prune need a PyTorch module" in err and "only quantize" in err
    assert main(_compress_argv(tmp_path, str(path), "--pipeline", "quantize", "--target", "cpu-torch")) == 2
    assert "runs on cpu-ort" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_broken_onnx_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(SpecError, match=r"model.onnx: not a valid ONNX model"):
        load_model(str(path))


@pytest.mark.slow
def test_an_onnx_model_is_quantized_end_to_end(tmp_path: Path, capsys, trained_conv_net, digits) -> None:
    from archetype.runtime.onnx_export import export_onnx

    path = export_onnx(trained_conv_net, digits.train.x[:1], tmp_path / "model.onnx")
    argv = _compress_argv(tmp_path, str(path), "--pipeline", "quantize", "--max-accuracy-drop", "5", "--json")
    assert main(argv) == 1  # 0.001 ms is out of reach; the int8 graph is kept and written
    report = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in report["steps"]] == ["source", "quantize"]
    assert report["steps"][1]["accepted"] or "rejected" in report["steps"][1]["message"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.onnx", "report.json", "report.txt"]


@pytest.mark.parametrize("flag, value", [
    ("--latency-ms", "nan"), ("--latency-ms", "inf"), ("--latency-ms", "1e300"), ("--max-size-mb", "-3"),
    ("--max-size-mb", "nan"), ("--epochs", "100000000"), ("--max-accuracy-drop", "inf"), ("--seed", "-1"),
])
def test_absurd_compress_values_fail_first(tmp_path: Path, capsys, pt2_file: Path, flag: str, value: str) -> None:
    argv = _compress_argv(tmp_path, str(pt2_file))
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{flag} must be" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "store.db").exists()


def test_a_stored_trial_too_large_to_build_is_refused(tmp_path: Path, capsys) -> None:
    from archetype.objectives import DEFAULT_OBJECTIVES
    from archetype.result import Result, TrialState
    from archetype.store import Store

    arch = {"input": "Image[1,8,8]", "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 10**8}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 10}}]}
    with Store.open(f"sqlite:///{tmp_path / 'store.db'}") as store:
        store.create_study("wide", space="conv-small", target="cpu-torch", objectives=DEFAULT_OBJECTIVES,
                           constraints=[], spec={"epochs": 1})
        trial = store.record_trial("wide", arch, "k" * 16, Result(TrialState.COMPLETE, values={"accuracy": 0.9}))
    assert main(_compress_argv(tmp_path, f"wide:{trial.number}", "--target", "cpu-torch")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"MODEL wide:{trial.number}: slot 'stem' (conv_bn_act width=100000000)" in err
    assert "over max_params" in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_pt2_model_is_compressed_and_written_back_as_pt2(tmp_path: Path, capsys, pt2_file: Path, digits) -> None:
    argv = _compress_argv(tmp_path, str(pt2_file), "--pipeline", "quantize", "--max-accuracy-drop", "5", "--json")
    assert main(argv) == 1  # 0.001 ms is out of reach; the best reached is written
    report = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in report["steps"]] == ["source", "quantize"]
    out = tmp_path / "out"
    # the fp32 graph (kept, or the one quantized) goes out as .pt2, never as a pickle, and reads back safely
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.pt2", "report.json", "report.txt"]
    with torch.inference_mode():
        assert load_model(str(out / "model.pt2")).model(digits.val.x[:3]).shape == (3, 10)
