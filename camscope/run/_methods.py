"""The run's one door to the methods registry (`camscope.methods`).

Everything the run needs to know about a method (names, options, how to build it, what the
sanity check changes) goes through these functions, so no run module names a method. When
`camscope.methods.registry` is present it is used as is; until then the plain ``METHODS``
mapping (name -> class) is read, options being the keywords each class's constructor accepts.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from camscope import methods as _methods

#: Options the sanity check overrides when the registry does not say (speed: ScoreCAM-like
#: methods score only their 64 highest-variance channels, for the trained and the randomised
#: model alike).
_FALLBACK_SANITY_OPTIONS = {"max_channels": 64}


def method_names() -> list[str]:
    """Registry names in display order."""
    return list(_methods.METHODS)


def canonical(name: str) -> str:
    """The registry name of ``name`` (aliases, case); unknown -> ValueError naming the choices."""
    if hasattr(_methods, "get_method"):
        return _methods.get_method(name).name
    key = name.strip().lower().replace("-", "").replace("_", "")
    for known in _methods.METHODS:
        if known.replace("_", "") == key:
            return known
    raise ValueError(f"unknown method '{name}'; choose from {', '.join(_methods.METHODS)}")


def _accepted(name: str) -> set[str]:
    cls = _methods.METHODS[name]
    cls = getattr(cls, "cls", cls)
    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in ("self", "model", "layer", "target_layers")}


def method_options(names: list[str], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Options per method; an option that none of ``names`` takes is a ValueError."""
    if hasattr(_methods, "method_options"):
        return _methods.method_options(names, given)
    out = {n: {k: v for k, v in given.items() if k in _accepted(n)} for n in names}
    unused = sorted(k for k in given if not any(k in o for o in out.values()))
    if unused:
        raise ValueError(
            f"option(s) {', '.join(unused)} apply to none of the methods {', '.join(names)}"
        )
    return out


def build(name: str, model: nn.Module, layer: str, options: dict[str, Any]) -> Any:
    """A ready method object (context manager with ``explain``/``close``)."""
    if hasattr(_methods, "build_cam"):
        return _methods.build_cam(name, model, layer, **options)
    return _methods.METHODS[name](model, layer, **options)


def sanity_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the method's sanity-check overrides applied."""
    if hasattr(_methods, "get_method"):
        extra = dict(getattr(_methods.get_method(name), "sanity_options", {}) or {})
    else:
        extra = {k: v for k, v in _FALLBACK_SANITY_OPTIONS.items() if k in _accepted(name)}
    return {**options, **extra}


def label(name: str) -> str:
    """Display label (``Grad-CAM``) where the registry has one, else the name."""
    if hasattr(_methods, "get_method"):
        return str(getattr(_methods.get_method(name), "label", name))
    return name
