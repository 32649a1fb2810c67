"""The method registry: every CAM method declares itself here, and nothing else names one.

A method class registers with `register` (a class decorator) and its `MethodSpec`: name, label,
family, paper, cost, options and how the sanity check rebuilds it. The CLI choices and help,
``camscope methods``, run metadata, evaluation and the report read `METHODS`.

Example::

    >>> from camscope.methods import get_method
    >>> get_method("gradcam++").label
    'Grad-CAM++'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "METHODS",
    "MethodSpec",
    "OptionSpec",
    "build_cam",
    "click_options",
    "get_method",
    "method_options",
    "option_keys",
    "register",
]


@dataclass(frozen=True)
class OptionSpec:
    """One option of one or more methods: a constructor keyword and its CLI flag.

    Attributes:
        name: keyword of the method's constructor (``"max_channels"``).
        cli: the CLI flag (``"--max-channels"``); one flag may serve several methods (the same
            OptionSpec object is then listed by each).
        type: ``int``, ``float``, ``str``, ``bool`` or a tuple of allowed string choices.
        default: the registry's default (None: off), which `build_cam` passes when the option
            is not given: the CLI's and the run's choice. A class imported by pytorch-grad-cam's
            name may default to pytorch-grad-cam's behaviour instead (AblationCAM's
            ``ablation_value``, ScoreCAM's ``variant``, the eigen methods' ``eigen_sign``).
        help: one line, with the cost where it matters.
        minimum: smallest allowed value for numbers.
    """

    name: str
    cli: str
    type: Any
    default: object
    help: str
    minimum: float | None = None

    @property
    def key(self) -> str:
        """The flag's parameter name (``--max-channels`` -> ``max_channels``)."""
        return self.cli.lstrip("-").replace("-", "_")

    def validate(self, value: object) -> None:
        """Raise ValueError with a one-line message if ``value`` is not allowed."""
        if value is None:
            return
        if isinstance(self.type, tuple):
            if value not in self.type:
                raise ValueError(f"{self.cli}: '{value}' is not one of {', '.join(self.type)}")
            return
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{self.cli}: expected a number, got {value!r}")
            if self.type is int and int(value) != value:
                raise ValueError(f"{self.cli}: expected an integer, got {value!r}")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{self.cli}: must be >= {self.minimum:g}, got {value}")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of camscope knows about a method."""

    name: str
    cls: type
    label: str
    family: str
    paper: str
    cost: str
    options: tuple[OptionSpec, ...] = ()
    sanity_options: Mapping[str, object] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


#: name -> MethodSpec, in display order: by family (`FAMILIES`), then registration order.
METHODS: dict[str, MethodSpec] = {}
FAMILIES = ("gradient", "eigen", "activation", "perturbation", "meta", "baseline")


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "")


def register(
    name: str,
    *,
    label: str,
    family: str,
    paper: str,
    cost: str,
    options: Iterable[OptionSpec] = (),
    sanity_options: Mapping[str, object] | None = None,
    aliases: Iterable[str] = (),
) -> Callable[[type], type]:
    """Class decorator: register a BaseCAM subclass under ``name`` (see `MethodSpec`)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family '{family}' ({', '.join(FAMILIES)})")

    def decorate(cls: type) -> type:
        if name in METHODS:
            raise ValueError(f"method '{name}' is already registered")
        cls.name = name
        METHODS[name] = MethodSpec(
            name, cls, label, family, paper, cost, tuple(options),
            dict(sanity_options or {}), tuple(aliases),
        )  # fmt: skip
        ordered = sorted(METHODS.values(), key=lambda s: FAMILIES.index(s.family))
        METHODS.clear()
        METHODS.update((s.name, s) for s in ordered)
        return cls

    return decorate


def get_method(name: str) -> MethodSpec:
    """The spec of ``name`` or an alias (case, ``-`` and ``_`` ignored); unknown -> ValueError."""
    key = _key(name)
    for spec in METHODS.values():
        if key == _key(spec.name) or key in (_key(a) for a in spec.aliases):
            return spec
    raise ValueError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")


def build_cam(name: str, model: Any, layers: Any, **options: object) -> Any:
    """Construct method ``name`` on ``model`` at ``layers`` with validated ``options``.

    Options not given take their `OptionSpec` default (the registry's choice, see there).
    """
    spec = get_method(name)
    known = {o.name: o for o in spec.options}
    for key, value in options.items():
        if key in known:
            known[key].validate(value)
    defaults = {o.name: o.default for o in spec.options if o.default is not None}
    return spec.cls(model, layers, **{**defaults, **options})


def method_options(names: Iterable[str], given: Mapping[str, object]) -> dict[str, dict]:
    """Split the given options among the selected methods.

    Args:
        names: the selected methods (names or aliases).
        given: option -> value, an option being named by its flag's parameter name
            (`OptionSpec.key`, e.g. ``"sscam_samples"``) or by its constructor keyword
            (``"num_samples"``: then for every selected method that has it); None = not given.

    Returns ``{method: {constructor keyword: value}}``. An option that none of the selected
    methods takes, or an unknown one, is a ValueError with a one-line message.
    """
    specs = [get_method(n) for n in names]
    result: dict[str, dict] = {s.name: {} for s in specs}
    for key, value in given.items():
        if value is None:
            continue
        matches = [o for s in METHODS.values() for o in s.options if o.key == key]
        matches = matches or [o for s in METHODS.values() for o in s.options if o.name == key]
        if not matches:
            raise ValueError(f"unknown method option '{key}'")
        users = [(s, o) for s in specs for o in s.options if o in matches]
        if not users:
            owners = [s.name for s in METHODS.values() if any(o in matches for o in s.options)]
            option = matches[0]
            raise ValueError(
                f"{option.cli} ({option.name}) applies to {', '.join(owners)}, none of which is "
                "selected"
            )
        for spec, option in users:
            option.validate(value)
            result[spec.name][option.name] = value
    return result


def option_keys() -> list[str]:
    """The parameter names of every method flag (what `click_options` adds to a command)."""
    return list(_all_options())


def _all_options() -> dict[str, tuple[OptionSpec, list[str]]]:
    """Map each flag key to (its OptionSpec, the methods that take it)."""
    seen: dict[str, tuple[OptionSpec, list[str]]] = {}
    for spec in METHODS.values():
        for option in spec.options:
            seen.setdefault(option.key, (option, []))[1].append(spec.name)
    return seen


def click_options() -> list[Callable]:
    """One click option per distinct flag of the registered methods (default None = not given).

    Each flag's value arrives under its `OptionSpec.key`; pass them all to `method_options`.
    """
    import click  # the CLI's dependency; imported here to keep the registry light

    decorators = []
    for option, users in _all_options().values():
        kind = click.Choice(option.type) if isinstance(option.type, tuple) else option.type
        default = "off" if option.default is None else option.default
        decorators.append(
            click.option(
                option.cli,
                option.key,
                type=kind,
                default=None,
                help=f"{option.help} [{', '.join(users)}; default {default}]",
            )
        )
    return decorators


def table() -> list[tuple[str, str, str, str, str]]:
    """(name, family, label, paper, cost) of every registered method, in display order."""
    return [(s.name, s.family, s.label, s.paper, s.cost) for s in METHODS.values()]
