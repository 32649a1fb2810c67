"""The run's one door to the methods registry (`camscope.methods.registry`).

Everything the run needs to know about a method (names, options, how to build it, what the
sanity check changes) goes through these functions, so no run module names a method.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from camscope import methods as _methods


def method_names() -> list[str]:
    """Registry names in display order."""
    return list(_methods.METHODS)


def canonical(name: str) -> str:
    """The registry name of ``name`` (aliases, case); unknown -> ValueError naming the choices."""
    return _methods.get_method(name).name


def method_options(names: list[str], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Options per method (`camscope.methods.method_options`); unused options: ValueError."""
    return _methods.method_options(names, given)


def own_options(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (constructor keyword -> value) checked against method ``name``'s options."""
    spec = _methods.get_method(name)
    declared = {o.name: o for o in spec.options}
    for key, value in given.items():
        if key not in declared:
            raise ValueError(
                f"{spec.name} has no option '{key}' (its options: {', '.join(declared) or 'none'})"
            )
        declared[key].validate(value)
    return dict(given)


def build(name: str, model: nn.Module, layer: str, options: dict[str, Any]) -> Any:
    """A ready method object (context manager with ``explain``/``close``)."""
    return _methods.build_cam(name, model, layer, **options)


def sanity_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the method's sanity-check overrides (`MethodSpec.sanity_options`)."""
    return {**options, **_methods.get_method(name).sanity_options}
