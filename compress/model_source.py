"""Where the model to compress comes from: a saved module, a factory with a state dict, or a study's trial."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archetype.errors import SpecError
from archetype.worker.data import Dataset
from archetype.worker.training import TrainConfig, recipe, train

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TRIAL = re.compile(r"^(?P<study>[^:]+):(?P<number>\d+)$")


@dataclass
class LoadedModel:
    """The model to compress, what it was loaded from, and a note for the user (e.g. that it was trained here)."""

    model: nn.Module
    source: str
    source_trial: tuple[str, int] | None = None
    note: str | None = None


def load_model(
    spec: str,
    *,
    weights: str | None = None,
    store: Any = None,
    dataset: Dataset | None = None,
    train_config: TrainConfig | None = None,
) -> LoadedModel:
    """``spec`` is a ``.pt`` file (``torch.save(module)``), ``pkg.mod:factory`` (+ ``weights``) or ``STUDY:TRIAL``."""
    if _TRIAL.match(spec) and not Path(spec).exists():
        if weights is not None:
            raise SpecError("--weights goes with a pkg.module:factory MODEL, not a study trial")
        match = _TRIAL.match(spec)
        assert match is not None
        return _from_trial(match["study"], int(match["number"]), store, dataset, train_config)
    if _FACTORY.match(spec) and not Path(spec).exists():
        return LoadedModel(_from_factory(spec, weights), spec)
    if weights is not None:
        raise SpecError("--weights goes with a pkg.module:factory MODEL, not a saved module")
    return LoadedModel(_from_file(Path(spec)), str(Path(spec).absolute()))


def _from_file(path: Path) -> nn.Module:
    if not path.is_file():
        raise SpecError(f"MODEL {path}: no such file (give a .pt file, pkg.module:factory or STUDY:TRIAL)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise SpecError(f"MODEL {path}: not a saved PyTorch model ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(loaded, dict):
        raise SpecError(f"MODEL {path}: holds a state dict, not a module; give pkg.module:factory and "
                        f"--weights {path}")
    if not isinstance(loaded, nn.Module):
        raise SpecError(f"MODEL {path}: holds a {type(loaded).__name__}, not a torch.nn.Module")
    return loaded.eval()


def _from_factory(spec: str, weights: str | None) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise SpecError(f"MODEL {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SpecError(f"MODEL {spec}: {module_name!r} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:
        raise SpecError(f"MODEL {spec}: calling {attr}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"MODEL {spec}: {attr}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except FileNotFoundError:
            raise SpecError(f"--weights {weights}: no such file") from None
        except Exception as exc:
            raise SpecError(f"--weights {weights}: not a state dict of {attr}(): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def _from_trial(
    study: str, number: int, store: Any, dataset: Dataset | None, config: TrainConfig | None
) -> LoadedModel:
    from archetype.searchspace import Architecture

    if store is None or dataset is None:
        raise SpecError(f"MODEL {study}:{number}: a study trial needs the store and --data")
    trial = store.trial(study, number)
    arch = Architecture.from_json(trial.arch)
    if str(arch.input) != str(dataset.input_type):
        raise SpecError(f"--data {dataset.name}: its samples are {dataset.input_type}, trial {number} of study "
                        f"'{study}' takes {arch.input}")
    model = arch.build()
    spec = store.get_study(study).spec
    config = config or recipe(str(spec.get("recipe", "plain")), epochs=int(spec.get("epochs", 5)),
                              seed=int(spec.get("seed", 0)), device=str(spec.get("device", "auto")))
    train(model, dataset, config)
    note = (f"trial {number} of study '{study}' has no saved weights: its architecture was trained here on "
            f"{dataset.name} for {config.epochs} epochs")
    return LoadedModel(model.eval(), f"{study}:{number}", (study, number), note)
