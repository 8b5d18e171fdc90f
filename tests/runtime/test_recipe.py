"""The training recipe: presets, schedule, batched augmentation, LAMB, weight average and stochastic depth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from archetype.errors import SpecError
from archetype.runtime.augmentation import mix_batch, padded_crop, random_flip, random_resized_crop
from archetype.runtime.data import load_dataset
from archetype.runtime.lamb import Lamb
from archetype.runtime.training import (
    RECIPES,
    TrainConfig,
    WeightAverage,
    evaluate_accuracy,
    recipe,
    stochastic_depth,
    train,
    warmup_cosine,
)
from archetype.searchspace import Architecture, Image, get_space
from archetype.searchspace.ops.layers import DropPath


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_presets_differ_from_the_quick_defaults_only_where_they_say():
    assert recipe("quick") == TrainConfig()
    full = recipe("full", epochs=3)
    assert full.epochs == 3 and full.ema > 0 and full.drop_path > 0 and full.crop == "pad" and full.mixup > 0
    plain = recipe("plain")
    assert (plain.batch_size, plain.warmup, plain.label_smoothing, plain.clip_grad) == (64, 0.0, 0.0, None)
    assert set(RECIPES) == {"quick", "full", "plain"}
    with pytest.raises(SpecError, match="--recipe 'fast': unknown recipe"):
        recipe("fast")


@pytest.mark.parametrize("field", [{"optimizer": "sgd"}, {"crop": "zoom"}, {"warmup": 1.0}, {"ema": -0.1},
                                   {"mixup": -1.0}, {"clip_grad": 0.0}, {"device": "tpu"}])
def test_recipe_fields_refuse_impossible_values(field):
    with pytest.raises((ValueError, SpecError)):
        TrainConfig(**field)


def test_warm_up_rises_linearly_then_the_cosine_falls_to_zero():
    factor = warmup_cosine(100, 0.1)
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(9) == pytest.approx(1.0) and factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    plain = warmup_cosine(10, 0.0)
    assert plain(0) == 1.0 and plain(5) == pytest.approx(0.5)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` (C, H, W) moved by (dy, dx) pixels, zeros shifted in."""
    out = torch.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[:, max(-dy, 0):h - max(dy, 0),
                                                                            max(-dx, 0):w - max(dx, 0)]
    return out


def test_padded_crop_shifts_each_image_by_its_own_offset():
    x = torch.rand(16, 2, 6, 6) + 1
    out = padded_crop(x, 2, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    offsets = []
    for image, source in zip(out, x):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(image, _shifted(source, dy, dx))]
        assert len(found) == 1, "each output is its source shifted by one offset within the padding"
        offsets.append(found[0])
    assert len(set(offsets)) > 3  # drawn per image, not once per batch


def test_flip_mirrors_about_half_the_batch_and_resized_crop_keeps_the_shape():
    x = torch.randn(200, 3, 8, 8)
    flipped = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    assert all(m or s for m, s in zip(mirrored, same)) and 70 < sum(mirrored) < 130
    crop = random_resized_crop(x, torch.Generator().manual_seed(0))
    assert crop.shape == x.shape and not torch.allclose(crop, x)
    full = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(full, x, atol=1e-5)  # the whole image, resampled at its own grid


def test_mixup_and_cutmix_mix_in_the_share_they_report():
    x = torch.zeros(8, 1, 16, 16)
    x[:4] = 1.0
    mixed, perm, lam = mix_batch(x, 0.0, 1.0, torch.Generator().manual_seed(1))  # cutmix only
    swapped = (mixed != x).float().mean(dim=(1, 2, 3))  # share of pixels taken from the partner
    differs = (x[perm] != x).flatten(1).any(1)
    assert torch.allclose(swapped[differs], torch.full_like(swapped[differs], 1 - lam))
    mixed, perm, lam = mix_batch(x, 0.4, 0.0, torch.Generator().manual_seed(2))  # mixup only
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm]) and 0 <= lam <= 1


def test_lamb_scales_each_step_by_the_trust_ratio():
    weight = nn.Parameter(torch.full((4, 4), 3.0))
    optimizer = Lamb([weight], lr=0.1)
    weight.grad = torch.ones(4, 4)
    optimizer.step()
    # the Adam direction is 1 everywhere, so the trust ratio ||w|| / ||u|| = 3 and each entry moves by lr * 3
    assert torch.allclose(weight.detach(), torch.full((4, 4), 3.0 - 0.3), atol=1e-4)


def test_the_weight_average_lags_the_weights_and_replaces_them_at_the_end():
    model = nn.Linear(2, 1)
    average = WeightAverage(model, decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    average.update()  # decay min(0.5, 2/11): the average moves 9/11 of the way
    average.copy_to(model)
    assert torch.allclose(model.weight.detach(), start + 9 / 11)


def test_stochastic_depth_drops_residual_branches_while_training_only():
    space = get_space("resnet", Image(1, 8, 8), 10)
    rng = np.random.default_rng(0)
    arch = next(a for a in (space.sample(rng) for _ in range(200))
                if any(c.op == "basic_block" for c in a.choices))
    model = arch.build()
    owners = [m for m in model.modules() if hasattr(m, "drop_path") and isinstance(m.drop_path, nn.Module)]
    before = [type(m.drop_path) for m in owners]
    with stochastic_depth(model, 0.3):
        rates = [m.drop_path.p for m in owners]
        assert all(isinstance(m.drop_path, DropPath) for m in owners)
        assert rates == pytest.approx([0.3 * depth / len(owners) for depth in range(1, len(owners) + 1)])
    assert [type(m.drop_path) for m in owners] == before


def test_one_quick_epoch_takes_a_residual_network_well_past_chance(digits):
    arch = Architecture.from_json({
        "input": "Image[1,8,8]",
        "slots": [
            {"slot": "stem", "op": "conv_bn_act", "params": {"width": 16, "kernel": 3, "stride": 1}},
            {"slot": "b1", "op": "basic_block", "params": {"width": 16, "stride": 1}},
            {"slot": "b2", "op": "basic_block", "params": {"width": 32, "stride": 2}},
            {"slot": "head", "op": "classifier_head", "params": {"classes": 10}},
        ],
    })
    torch.manual_seed(0)
    model = arch.build()
    report = train(model, digits, recipe("quick", epochs=1, threads=1))
    assert report.images == len(digits.train) and 0 < report.data_seconds < report.seconds
    accuracy = evaluate_accuracy(model, digits.val)
    assert accuracy > 0.6, f"validation accuracy {accuracy:.3f} after one quick epoch"


def test_the_full_recipe_trains_deterministically_with_every_part_on(digits, tiny_arch):
    config = recipe("full", epochs=1, threads=1, mixup=0.2, cutmix=1.0, optimizer="lamb", crop="resized",
                    flip=True)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_arch.build()
        runs.append((train(model, digits, config).losses, evaluate_accuracy(model, digits.val)))
    assert runs[0] == runs[1] and all(math.isfinite(v) for v in runs[0][0])
