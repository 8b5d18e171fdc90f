"""Devices: names resolved at the edge, and training on CUDA (mixed precision, channels_last, pinned transfers).

The CUDA tests skip with the reason printed where no CUDA device is present. They import only torch,
numpy and Archetype's worker and searchspace packages and build their data in memory, so
``bench/gpu_checks.sh`` runs them on a bare GPU machine.
"""

from __future__ import annotations

import pytest
import torch

from archetype.errors import SpecError
from archetype.runtime import training
from archetype.runtime.augmentation import padded_crop
from archetype.runtime.data import Dataset, Split
from archetype.runtime.devices import autocast_dtype, default_batch_size, resolve_device
from archetype.runtime.training import evaluate_accuracy, recipe, train
from archetype.searchspace import Architecture, Image

CUDA = torch.cuda.is_available()
NO_CUDA = f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees none"
cuda_only = pytest.mark.skipif(not CUDA, reason=NO_CUDA)
cpu_only = pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")

NET = {
    "input": "Image[3,16,16]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "b1", "op": "basic_block", "params": {"width": 16, "stride": 1}},
        {"slot": "b2", "op": "basic_block", "params": {"width": 32, "stride": 2}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 4}},
    ],
}


def blobs(n: int = 1024, seed: int = 0) -> Dataset:
    """Four classes of 3x16x16 images, each class a bright quadrant over noise: learnable in one epoch."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (3 * n,), generator=g)
    x = torch.randn(3 * n, 3, 16, 16, generator=g) * 0.5
    for k in range(4):
        rows, cols = divmod(k, 2)
        x[y == k, :, rows * 8:(rows + 1) * 8, cols * 8:(cols + 1) * 8] += 1.5
    splits = [Split(x[i * n:(i + 1) * n].contiguous(), y[i * n:(i + 1) * n].contiguous()) for i in range(3)]
    return Dataset("blobs", *splits, Image(3, 16, 16), 4)


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    return Architecture.from_json(NET).build()


def test_device_names_resolve_and_bad_ones_name_the_option():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(SpecError, match="--device 'gpu0': expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    assert default_batch_size(torch.device("cpu"), 1_200_000) == 128
    assert default_batch_size(torch.device("cuda"), 1_200_000) == 512
    assert default_batch_size(torch.device("cuda"), 50_000) == 64  # a short budget needs steps: ~800 an epoch
    assert default_batch_size(torch.device("cpu"), 1_000) == 16
    assert autocast_dtype(torch.device("cpu")) == torch.bfloat16


@cpu_only
def test_cuda_on_a_machine_without_it_is_one_line_naming_the_option():
    with pytest.raises(SpecError, match=r"^--device cuda: this machine has no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(SpecError, match=r"^--device cuda:1: this machine has no CUDA device"):
        resolve_device("cuda:1")


@cuda_only
def test_training_on_cuda_with_mixed_precision_learns_and_hands_the_model_back_on_the_cpu():
    data, model = blobs(), build()
    report = train(model, data, recipe("quick", epochs=2, device="cuda", amp=True, channels_last=True))
    assert report.device.startswith("cuda") and report.images == 2 * len(data.train)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last undone
    assert report.losses[1] < report.losses[0]
    assert evaluate_accuracy(model, data.val) > 0.9


@cuda_only
def test_cuda_and_cpu_draw_the_same_augmentation_from_one_seed():
    x = torch.randn(32, 3, 16, 16)
    on_cpu = padded_crop(x, 2, torch.Generator().manual_seed(5))
    on_cuda = padded_crop(x.cuda(), 2, torch.Generator().manual_seed(5))
    assert torch.equal(on_cpu, on_cuda.cpu())


@cuda_only
def test_a_split_too_large_for_the_device_moves_batch_by_batch_from_pinned_memory():
    data = blobs(512)
    saved = training.RESIDENT_SHARE
    training.RESIDENT_SHARE = 0.0  # nothing counts as fitting: every batch is gathered, pinned and copied
    try:
        batches = training.TrainBatches(data.train, torch.device("cuda"), 128, seed=0)
        assert not batches.resident
        x, y = next(iter(batches.epoch(1)))
        assert x.device.type == "cuda" and y.device.type == "cuda" and x.shape == (128, 3, 16, 16)
        model = build()
        train(model, data, recipe("quick", epochs=2, device="cuda"))
    finally:
        training.RESIDENT_SHARE = saved
    assert evaluate_accuracy(model, data.val) > 0.9


@cuda_only
def test_full_precision_on_cuda_matches_the_loss_curve_of_mixed_precision_roughly():
    data = blobs()
    fp32, bf16 = build(), build()
    a = train(fp32, data, recipe("quick", epochs=1, device="cuda", amp=False, channels_last=False))
    b = train(bf16, data, recipe("quick", epochs=1, device="cuda", amp=True, channels_last=True))
    assert abs(a.losses[0] - b.losses[0]) < 0.1 * a.losses[0]


@cuda_only
def test_a_supernet_trains_on_cuda_and_its_checkpoint_and_extracted_network_are_on_the_cpu():
    import tempfile
    from pathlib import Path

    import numpy as np

    from archetype.searchspace import get_space
    from archetype.worker.supernet_training import SupernetConfig, SupernetTrainer

    data = blobs(256)
    space = get_space("conv-small", data.input_type, data.num_classes)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "supernet.pt"
        trainer = SupernetTrainer(space, data, SupernetConfig(epochs=1, device="cuda"), checkpoint)
        trainer.train()
        state = torch.load(checkpoint, weights_only=True)  # tensors come back on the device they were saved from
        assert all(t.device.type == "cpu" for t in state["supernets"][0].values())  # loadable without CUDA
        arch = space.sample(np.random.default_rng(0))
        assert 0.0 <= trainer.score(arch) <= 1.0
        network = trainer.extract(arch)
        assert all(p.device.type == "cpu" for p in network.parameters())
        resumed = SupernetTrainer(space, data, SupernetConfig(epochs=1, device="cpu"), checkpoint)
        assert resumed.step == trainer.step  # a checkpoint moves between devices


EXPERTS = {
    "input": "Image[3,16,16]",
    "slots": [
        {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
        {"slot": "b1", "op": "condconv", "params": {"width": 16, "kernel": 3, "stride": 1, "experts": 4}},
        {"slot": "head", "op": "classifier_head", "params": {"classes": 4}},
    ],
}


def test_a_network_with_five_dimensional_weights_trains_in_the_default_memory_format():
    """CondConv keeps its experts' kernels in one 5-D weight, which channels_last cannot hold."""
    torch.manual_seed(0)
    model = Architecture.from_json(EXPERTS).build()
    assert any(p.dim() == 5 for p in model.parameters())
    report = train(model, blobs(256), recipe("quick", epochs=1, device="cuda" if CUDA else "cpu", channels_last=True))
    assert report.images == 256 and all(p.is_contiguous() for p in model.parameters())
