"""The CLI on data from disk: a search on an image folder through Ray, and bad folders and archives refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from archetype.store import Store


def _archetype(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "archetype", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_search_trains_on_an_image_folder(tmp_path, make_image_folder):
    make_image_folder(tmp_path / "digits", per_class=100)
    url = f"sqlite:///{tmp_path / 'folder.db'}"
    run = _archetype("search", "--space", "conv-small", "--data", "folder:digits", "--latency-ms", "50",
                     "--trials", "2", "--epochs", "5", "--storage", url, "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    with Store.open(url) as store:
        study = store.get_study(printed["study"])
        trials = store.trials(study.name)
    assert study.spec["data"] == "folder:digits" and len(trials) == 2
    for t in trials:
        assert t.state.value == "complete", t.error
    assert max(t.values["accuracy"] for t in trials) > 0.3, "trained on the folder's images, not guessing (0.1)"
    assert "Image[3,32,32]" in json.dumps(trials[0].arch)


@pytest.mark.parametrize("bad", ["empty-folder", "empty-class", "not-cifar"])
def test_bad_data_is_one_line_exit_2_and_nothing_stored(tmp_path, bad):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    (tmp_path / "images" / "dogs").mkdir()
    (tmp_path / "images" / "dogs" / "rex.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "archive.tar.gz").write_text("not an archive")
    (tmp_path / "nothing").mkdir()
    data, expected = {
        "empty-folder": (f"folder:{tmp_path / 'nothing'}", "nothing: no class sub-folders of PNG/JPEG images"),
        "empty-class": (f"folder:{tmp_path / 'images'}", "cats: class folder holds no PNG/JPEG images"),
        "not-cifar": (f"cifar10:{tmp_path / 'archive.tar.gz'}", "archive.tar.gz: not a readable CIFAR python archive"),
    }[bad]
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run = _archetype("search", "--space", "conv-small", "--data", data, "--latency-ms", "5", "--trials", "1",
                     "--storage", url, cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], run.stderr
    if (tmp_path / "store.db").exists():
        with Store.open(url) as store:
            assert store.list_studies() == []
