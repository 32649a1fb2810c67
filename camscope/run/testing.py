"""Test and smoke-run support: a named classifier with seeded random weights (``--random-weights``).

Random weights need no download, so tests (and a user checking an install offline) can drive
the whole run — including subprocesses killed mid-run — with a small real architecture, e.g.
``camscope run photos --model mobilenet_v3_small --random-weights``. The results mean nothing
about the images; run.json and the settings record ``weights: random (seed 0)``.
"""

from __future__ import annotations

import torch

from camscope.classes import imagenet_categories
from camscope.layers import default_layer
from camscope.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    ModelError,
    load_model,
    random_architecture,
)

__all__ = ["random_model"]


def random_model(name: str | None, device: torch.device | str = "cpu") -> LoadedModel:
    """``name`` (torchvision or timm) with weights drawn from ``torch.manual_seed(0)``.

    Example::

        >>> random_model("mobilenet_v3_small").default_layer   # doctest: +SKIP
        'features.12'
    """
    if not name:
        raise ModelError("--random-weights needs --model NAME (a torchvision or timm classifier)")
    from camscope.adapters.hf import is_hf_spec

    if is_hf_spec(name):  # a Hugging Face folder: its own config, seeded random weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            loaded = load_model(name, device=device, pretrained=False)
        loaded.notes.append(
            "random weights (--random-weights): the maps say nothing about the images"
        )
        return loaded
    model = random_architecture(name, num_classes=1000, seed=0).eval().to(device)
    return LoadedModel(
        model=model,
        name=name,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        categories=imagenet_categories(),
        default_layer=default_layer(model),
        weights_source="random (seed 0; --random-weights)",
        notes=["random weights (--random-weights): the maps say nothing about the images"],
    )
