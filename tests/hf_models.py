"""Tiny random-weight Hugging Face image classifiers (hidden sizes 16-48, 1-2 layers), no download.

Each entry: family -> (builder, input size, the default layer camscope must choose).
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

NUM_LABELS = 5
LABELS = {i: f"thing{i}" for i in range(NUM_LABELS)}
VIT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 4,
}


def _cfg(cls_name: str, **kwargs):
    return getattr(transformers, cls_name)(num_labels=NUM_LABELS, id2label=LABELS, **kwargs)


FAMILIES = {
    "vit": ("ViT", lambda: _cfg("ViTConfig", **VIT), (32, 32), "vit.layers.1.layernorm_before"),
    "deit": (
        "DeiT",
        lambda: _cfg("DeiTConfig", **VIT),
        (32, 32),
        "deit.layers.1.layernorm_before",
    ),
    "beit": (
        "Beit",
        lambda: _cfg("BeitConfig", use_mean_pooling=True, **VIT),
        (32, 32),
        "beit.layers.1.layernorm_before",
    ),
    "swin": (
        "Swin",
        lambda: _cfg(
            "SwinConfig",
            embed_dim=24,
            depths=[1, 1],
            num_heads=[2, 2],
            image_size=64,
            patch_size=4,
            window_size=4,
        ),
        (64, 64),
        "swin.layernorm",
    ),
    "convnext": (
        "ConvNext",
        lambda: _cfg("ConvNextConfig", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]),
        (64, 64),
        "convnext.encoder.stages.1",
    ),
    "resnet": (
        "ResNet",
        lambda: _cfg("ResNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]),
        (64, 64),
        "resnet.encoder.stages.1",
    ),
    "regnet": (
        "RegNet",
        lambda: _cfg(
            "RegNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8
        ),
        (64, 64),
        "regnet.encoder.stages.1",
    ),
    "efficientnet": (
        "EfficientNet",
        lambda: _cfg(
            "EfficientNetConfig",
            image_size=128,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=320,
        ),
        (128, 128),
        "efficientnet.encoder.top_activation",
    ),
    "mobilevit": (
        "MobileViT",
        lambda: _cfg(
            "MobileViTConfig",
            image_size=128,
            hidden_sizes=[16, 24, 32],
            neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
        ),
        (128, 128),
        "mobilevit.conv_1x1_exp",
    ),
}


def build(family: str, seed: int = 0):
    """The family's tiny classifier with seeded random weights, in eval mode."""
    import torch

    prefix, config, _size, _layer = FAMILIES[family]
    cls = getattr(transformers, f"{prefix}ForImageClassification")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config()).eval()
