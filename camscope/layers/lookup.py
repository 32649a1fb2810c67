"""Layer lookup: paths such as ``layer4[-1]`` / ``layer4.2`` -> (canonical name, module).

Example::

    >>> import torchvision
    >>> resolve_layer(torchvision.models.resnet18(), "layer4[-1]")[0]
    'layer4.1'
"""

from __future__ import annotations

import re

from torch import nn

from camscope.errors import LayerError

__all__ = ["last_child", "list_layers", "resolve_layer"]

_TOKEN = re.compile(r"\s*(?:\.?\s*([A-Za-z_][A-Za-z0-9_]*|\d+)|\[\s*(-?\d+)\s*\])")


def _parse_layer_path(spec: str) -> list[str | int]:
    tokens: list[str | int] = []
    pos = 0
    spec = spec.strip()
    while pos < len(spec):
        match = _TOKEN.match(spec, pos)
        if match is None or match.end() == pos:
            raise LayerError(f"cannot parse layer path '{spec}' at '{spec[pos:]}'")
        name, index = match.groups()
        tokens.append(int(index) if index is not None else name)
        pos = match.end()
    if not tokens:
        raise LayerError("empty layer path")
    return tokens


def list_layers(model: nn.Module, max_depth: int | None = None) -> list[str]:
    """Canonical dotted names of the model's submodules (optionally up to ``max_depth``)."""
    names = [n for n, _ in model.named_modules() if n]
    if max_depth is not None:
        names = [n for n in names if n.count(".") < max_depth]
    return names


def resolve_layer(model: nn.Module, spec: str | nn.Module) -> tuple[str, nn.Module]:
    """Find a submodule from a path such as ``layer4[-1]``, ``layer4.2`` or ``layer3``.

    Returns the canonical dotted name (``layer4.2``) and the module. A module object is accepted
    too and must belong to the model.
    """
    if isinstance(spec, nn.Module):
        for name, module in model.named_modules():
            if module is spec and name:
                return name, module
        raise LayerError("the given layer module is not a submodule of the model")
    module: nn.Module = model
    keys: list[str] = []
    for token in _parse_layer_path(spec):
        children = list(module._modules.keys())
        if isinstance(token, int):
            if not -len(children) <= token < len(children):
                module = None  # type: ignore[assignment]
            else:
                key = children[token]
                keys.append(key)
                module = module._modules[key]  # type: ignore[assignment]
        elif token in module._modules:
            keys.append(token)
            module = module._modules[token]  # type: ignore[assignment]
        else:
            module = None  # type: ignore[assignment]
        if module is None:
            shown = list_layers(model, max_depth=2)
            raise LayerError(
                f"unknown layer '{spec}'; valid layers include: {', '.join(shown)}"
                + (
                    " (deeper modules by dotted path)"
                    if len(shown) < len(list_layers(model))
                    else ""
                )
            )
    if not keys:
        raise LayerError(f"layer path '{spec}' names the whole model")
    return ".".join(keys), module


def last_child(model: nn.Module, name: str) -> str | None:
    """The dotted name of the last child of module ``name`` (None if it has no children)."""
    module = resolve_layer(model, name)[1]
    children = list(module._modules)
    return f"{name}.{children[-1]}" if children else None
