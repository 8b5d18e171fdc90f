"""``archetype latency build`` and ``check`` as a user runs them, on a tiny space measured for real."""

from __future__ import annotations

import json
import textwrap

import pytest

from archetype.cli import main
from archetype.store import Store

SPACE = """\
name: tiny-latency
slots:
  - name: stem
    candidates:
      - op: conv_bn_act
        width: [8, 16]
        kernel: 3
        stride: 1
  - name: block
    candidates:
      - op: identity
      - op: conv_bn_act
        width: [8, 16]
        kernel: 3
        stride: 1
  - name: head
    candidates:
      - op: classifier_head
        classes: $classes
"""


@pytest.mark.slow
def test_build_then_check_on_a_tiny_space(tmp_path, capsys):
    space = tmp_path / "tiny.yaml"
    space.write_text(textwrap.dedent(SPACE))
    url = f"sqlite:///{tmp_path / 'latency.db'}"
    common = ["--space", str(space), "--target", "cpu-torch", "--storage", url, "--json"]

    assert main(["latency", "build", *common]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["instances"] == 10 and built["measured"] == 10 and built["stored_before"] == 0
    assert built["failed"] == {} and built["seconds"] > 0
    assert main(["latency", "build", *common]) == 0  # resumed: nothing left to measure
    again = json.loads(capsys.readouterr().out)
    assert again["measured"] == 0 and again["stored_before"] == 10

    assert main(["latency", "check", *common, "-n", "6"]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["architectures"] == 6 and check["instances_measured"] == 0  # the space has 6 architectures
    assert 0 <= check["within_table"] <= 1 and 0 <= check["within_predictor"] <= 1
    assert check["overhead_ms"] > 0 and check["median_error_table"] >= 0
    with Store.open(url) as store:
        assert [s.name for s in store.list_studies()] == []

    assert main(["latency", "check", *common[:-1], "-n", "6"]) == 0  # the table as text; the six are stored
    text = capsys.readouterr().out
    assert "within ±10%" in text and "table sum + overhead" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["latency", "build", "--space", "nope"], "unknown space 'nope'"),
        (["latency", "build", "--space", "conv-small", "--target", "tpu"], "unknown target 'tpu'"),
        (["latency", "check", "--space", "conv-small", "-n", "0"], "-n must be a positive integer, got 0"),
        (["latency", "build", "--space", "conv-small", "--max-instances", "0"], "--max-instances must be a positive"),
    ],
)
def test_bad_latency_input_is_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archetype latency: error: ") and message in err and "\n" not in err


def test_search_that_must_predict_latency_refuses_a_missing_table(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    argv = ["search", "--space", "conv-small", "--latency-ms", "1", "--predict-latency", "--storage", url]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's first frame
    assert err == ("archetype search: error: no latency table for target 'cpu-ort' on this machine; "
                   "run: archetype latency build --space conv-small --target cpu-ort")
    with Store.open(url) as store:
        assert store.list_studies() == []
