"""Supernet training: SPOS, sandwich and mixture steps, atomic checkpoints, exact resume, scoring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from archetype.errors import SpecError
from archetype.runtime.data import load_dataset
from archetype.searchspace import Image, get_space
from archetype.worker.supernet_training import SupernetConfig, SupernetTrainer

QUICK = SupernetConfig(epochs=1, batch_size=128, checkpoint_every=3, bn_batches=2)


@pytest.fixture(scope="module")
def space():
    return get_space("pool-positions", Image(1, 8, 8), 10)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", 0)


class _Stop(Exception):
    pass


def _stop_at(step: int):
    def on_step(done: int, total: int) -> None:
        if done == step:
            raise _Stop

    return on_step


@pytest.mark.slow
def test_resumed_training_ends_where_an_uninterrupted_run_ends(space, digits, tmp_path: Path) -> None:
    whole = SupernetTrainer(space, digits, QUICK)
    whole.train()
    path = tmp_path / "ckpt" / "supernet.pt"
    first = SupernetTrainer(space, digits, QUICK, checkpoint=path)
    with pytest.raises(_Stop):
        first.train(on_step=_stop_at(4))  # the checkpoint of step 3 is the last one written
    assert torch.load(path, weights_only=True)["step"] == 3
    resumed = SupernetTrainer(space, digits, QUICK, checkpoint=path)
    assert resumed.step == 3
    report = resumed.train()
    assert report.steps == whole.total_steps == whole.step
    for a, b in zip(whole.supernets[0].state_dict().values(), resumed.supernets[0].state_dict().values()):
        torch.testing.assert_close(a, b)
    assert sorted(p.name for p in path.parent.iterdir()) == ["supernet.pt"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_checkpoint(space, digits, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "supernet.pt"
    trainer = SupernetTrainer(space, digits, QUICK)
    trainer.save(path)
    before = path.read_bytes()

    def broken_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    trainer.step = 5
    with pytest.raises(OSError):
        trainer.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["supernet.pt"]


def test_a_checkpoint_of_another_version_or_config_is_refused(space, digits, tmp_path: Path) -> None:
    path = tmp_path / "supernet.pt"
    SupernetTrainer(space, digits, QUICK).save(path)
    with pytest.raises(SpecError, match="written for space"):
        SupernetTrainer(space, digits, dataclasses.replace(QUICK, lr=1e-2), checkpoint=path)
    state = torch.load(path, weights_only=True)
    state["version"] = 99
    torch.save(state, path)
    with pytest.raises(SpecError, match="checkpoint version 99"):
        SupernetTrainer(space, digits, QUICK, checkpoint=path)


@pytest.mark.slow
def test_sandwich_and_mixture_train_and_score(space, digits) -> None:
    config = dataclasses.replace(QUICK, sandwich=True, supernets=2)
    trainer = SupernetTrainer(space, digits, config)
    report = trainer.train()
    assert report.steps == trainer.total_steps and all(np.isfinite(report.losses))
    assert trainer.assignment is not None and len(trainer.assignment.configs) > 1
    assert (trainer.assignment.weights != 1.0).any()  # validation accuracy moved W
    arch = space.sample(np.random.default_rng(3))
    accuracy = trainer.score(arch)
    assert 0.0 <= accuracy <= 1.0
    net = trainer.recalibrate(arch)
    x = digits.val.x[:16]
    with torch.no_grad():
        torch.testing.assert_close(trainer.extract(arch)(x), net(x), atol=1e-5, rtol=1e-5)


def test_recalibration_replaces_the_batch_norm_statistics(space, digits) -> None:
    trainer = SupernetTrainer(space, digits, QUICK)
    arch = space.sample(np.random.default_rng(0))
    net = trainer.supernets[0]
    net.activate(arch)
    norms = [m for mod in net.active_modules() for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.running_mean.fill_(100.0)
    trainer.recalibrate(arch)
    assert all(m.running_mean.abs().max() < 100.0 for m in norms)
    assert all(m.momentum == 0.1 for m in norms)
    assert not net.training


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SpecError, match="supernets must be a positive integer"):
        SupernetConfig(supernets=0)


class _FileCreatingPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_hostile_checkpoint_is_refused_without_running_it(space, digits, tmp_path: Path) -> None:
    path, marker = tmp_path / "supernet.pt", tmp_path / "created-by-the-payload"
    torch.save({"step": 3, "supernets": [_FileCreatingPayload(marker)]}, path)
    trainer = SupernetTrainer(space, digits, QUICK)
    with pytest.raises(SpecError, match=r"supernet\.pt: cannot read the supernet checkpoint: Unpickling") as caught:
        trainer.load(path)
    assert len(str(caught.value).splitlines()) == 1 and not marker.exists()
