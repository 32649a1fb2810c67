"""The default CAM layer of the model families camscope recognises by their structure.

`DEFAULT_RULES` is the table: each rule looks at the model's modules (no forward pass) and names
the conventional layer of its family, or None. The first rule whose layer exists wins; a model
that no rule recognises gets the last feature map before the network pools
(`camscope.layers.probe.default_layer`, one dry forward pass). A new family is one more rule.

Example::

    >>> import torchvision
    >>> layer_by_structure(torchvision.models.resnet18())
    'layer4.1'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from camscope.layers.lookup import last_child

__all__ = ["DEFAULT_RULES", "DefaultRule", "Modules", "layer_by_structure"]


class Modules:
    """A model's modules by dotted name, with the one helper the rules share (`last`)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.by_name = dict(model.named_modules())

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> nn.Module:
        return self.by_name[name]

    def last(self, path: str | None) -> str | None:
        """The last child of the Sequential / ModuleList ``path`` (None if there is none)."""
        module = self.by_name.get(path) if path else None
        if not isinstance(module, nn.Sequential | nn.ModuleList) or not len(module._modules):
            return None
        return last_child(self.model, path)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DefaultRule:
    """One family: ``layer(modules)`` -> its conventional layer's dotted name, or None."""

    family: str
    layer: Callable[[Modules], str | None]


def _hugging_face(m: Modules) -> str | None:
    from camscope.adapters.hf import hf_default_layer  # a leaf: imports nothing of camscope

    return hf_default_layer(m.model)


def _resnet(m: Modules) -> str | None:
    return block if (block := m.last("layer4")) and "fc" in m else None


def _timm_vit(m: Modules) -> str | None:
    return f"{block}.norm1" if "patch_embed" in m and (block := m.last("blocks")) else None


def _torchvision_vit(m: Modules) -> str | None:
    return f"{block}.ln_1" if (block := m.last("encoder.layers")) else None


def _timm_swin(m: Modules) -> str | None:
    stage = m.last("layers")
    return f"{block}.norm1" if stage and (block := m.last(f"{stage}.blocks")) else None


def _torchvision_swin(m: Modules) -> str | None:
    block = m.last(m.last("features"))
    if block and type(m[block]).__name__.startswith("SwinTransformerBlock"):
        return f"{block}.norm1"
    return None


def _timm_efficientnet(m: Modules) -> str | None:
    return "bn2" if all(n in m for n in ("bn2", "conv_head", "global_pool")) else None


#: The families recognised by structure, in the order they are tried.
DEFAULT_RULES: list[DefaultRule] = [
    DefaultRule(
        "Hugging Face transformers: per architecture (camscope.adapters.hf)", _hugging_face
    ),
    DefaultRule("ResNet, ResNeXt, Wide ResNet: layer4[-1]", _resnet),
    DefaultRule("timm ViT, DeiT, BEiT, EVA: blocks[-1].norm1", _timm_vit),
    DefaultRule("torchvision ViT: encoder.layers[-1].ln_1", _torchvision_vit),
    DefaultRule("timm Swin: layers[-1].blocks[-1].norm1", _timm_swin),
    DefaultRule("torchvision Swin: features[-1][-1].norm1", _torchvision_swin),
    DefaultRule(
        "timm EfficientNet / MobileNetV2 family: bn2 (head conv+BN+act)", _timm_efficientnet
    ),
]


def layer_by_structure(model: nn.Module) -> str | None:
    """The layer of the first `DEFAULT_RULES` entry that recognises ``model`` (no forward pass)."""
    modules = Modules(model)
    for rule in DEFAULT_RULES:
        name = rule.layer(modules)
        if name is not None and name in modules:
            return name
    return None
