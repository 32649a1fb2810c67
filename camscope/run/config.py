"""One validated run configuration: `RunConfig` (what the user asked) and `prepare` (checked).

Every option is checked before the first image and before anything is created on disk: cheap
checks in `RunConfig.check`, the rest in `prepare` (the device by actually running a small
computation on it, the model and weights by loading them, the layer by one dry forward pass,
the target class, each method's options by building the method once). `prepare` also fixes the
run's *settings*: everything that changes a per-image result (model, weights file hash or tag,
layer, methods and their options, target, image size and normalisation, metrics and steps,
saved map kinds). Their hash (`RunContext.settings_hash`) identifies done work for resume.

Example::

    >>> from camscope.run import RunConfig, prepare
    >>> ctx = prepare(RunConfig(inputs=("photos",), out_dir="out", methods=("gradcam",),
    ...                          model="efficientnet_lite0"))      # doctest: +SKIP
    >>> ctx.settings["layer"], len(ctx.settings_hash)                  # doctest: +SKIP
    ('bn2', 16)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from camscope.io import DEFAULT_MAX_PIXELS
from camscope.metrics import DEFAULT_STEPS
from camscope.models import (
    LoadedModel,
    ModelError,
    TargetError,
    one_line,
    parse_target_spec,
    resolve_layer,
)
from camscope.run import _methods

__all__ = ["SAVE_MAPS", "RunConfig", "RunContext", "UsageError", "prepare", "probe_device"]

log = logging.getLogger("camscope")

#: ``--save-maps`` choices; ``both`` (the default) writes the .npy map and the .png overlay.
SAVE_MAPS = {"both": ("npy", "png"), "npy": ("npy",), "png": ("png",), "none": ()}
DEFAULT_METHODS = ("gradcam", "ablationcam", "scorecam")


class UsageError(ValueError):
    """Arguments that prevent a run from starting; nothing has been written (exit code 2)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a user can ask of a run (picklable; Ray actors get a copy).

    Attributes:
        inputs: image files, folders (searched recursively) or glob patterns.
        out_dir: the run folder.
        inputs_from: a text file with one path per line, or a CSV with a ``file`` column.
        shard: ``(i, n)``: take the i-th of n deterministic parts of the inputs (0 <= i < n).
        method_options: option name -> value, as given by the user (validated by the registry).
        save_maps: ``both``, ``npy``, ``png`` or ``none`` (the map is always in the results table).
        sanity_images: images in the sanity check's own sample (0 skips it; only with metrics).
        part_images: images per results part file at most (a part is written per batch).
        random_weights: build ``model`` with seeded random weights (tests, smoke runs; recorded
            in run.json and the settings as ``weights: random``).
        overwrite: remove an earlier run's outputs in ``out_dir`` and start afresh.
    """

    inputs: tuple[str, ...] = ()
    out_dir: str = "camscope-output"
    methods: tuple[str, ...] = DEFAULT_METHODS
    method_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    weights: str | None = None
    weights_tag: str | None = None
    random_weights: bool = False
    layer: str | None = None
    target: str | int | None = None
    device: str = "auto"
    batch_size: int = 8
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    metrics: bool = False
    steps: int = DEFAULT_STEPS
    labels: str | None = None
    sanity_images: int = 8
    save_maps: str = "both"
    inputs_from: str | None = None
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    argv: tuple[str, ...] | None = None

    def check(self) -> None:
        """Every check that needs neither the model nor the device; UsageError on the first."""
        if not self.inputs and not self.inputs_from:
            raise UsageError("no inputs given (image files, folders, globs or --inputs-from)")
        if not self.methods:
            raise UsageError(f"no method given; choose from {', '.join(_methods.method_names())}")
        for name, value, low in (
            ("--batch-size", self.batch_size, 1),
            ("--steps", self.steps, 1),
            ("--sanity-images", self.sanity_images, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise UsageError(f"--max-pixels must be >= 1, got {self.max_pixels}")
        if self.save_maps not in SAVE_MAPS:
            raise UsageError(f"--save-maps must be one of {', '.join(SAVE_MAPS)}")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise UsageError(f"--shard {i}/{n}: need 0 <= I < N (e.g. 0/4 .. 3/4)")
        if self.weights is not None and self.random_weights:
            raise UsageError("--weights and --random-weights exclude each other")
        for name, path in (("--inputs-from", self.inputs_from), ("--labels", self.labels)):
            if path is not None and not os.path.isfile(path):
                raise UsageError(f"{name} {path}: no such file")


def _target(spec: str | int | None, categories: list[str]) -> int | str | None:
    """``--target``: None (top-1 of each image), ``"truth"`` (its true class) or an index."""
    if spec is None:
        return None
    target = parse_target_spec(spec, categories)
    return None if target == "top1" else target


@dataclass
class RunContext:
    """A checked configuration plus what `prepare` resolved (model, device, layer, settings)."""

    config: RunConfig
    loaded: LoadedModel
    device: torch.device
    layer: str
    methods: list[str]
    options: dict[str, dict[str, Any]]
    target: int | str | None
    settings: dict[str, Any]
    settings_hash: str

    @property
    def out_dir(self) -> Path:
        """The run folder (``config.out_dir``)."""
        return Path(self.config.out_dir)

    @property
    def save_maps(self) -> tuple[str, ...]:
        """The map kinds to save, from ``config.save_maps``."""
        return SAVE_MAPS[self.config.save_maps]


def probe_device(spec: str) -> torch.device:
    """The device ``spec`` names, after running a small computation on it (else UsageError).

    ``auto`` is CUDA when available, else the CPU. ``meta`` and devices this build of torch
    cannot use (``mps`` off Apple silicon, ``cuda`` without a GPU) are refused here, before
    any work.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {spec}: unknown device (auto, cpu, cuda, cuda:N)") from exc
    try:
        value = float((torch.ones(2, device=device) * 2).sum().cpu())
    except Exception as exc:  # noqa: BLE001 - any backend failure means the device is unusable
        cause = one_line(exc)
        raise UsageError(f"--device {spec}: cannot compute on this device ({cause})") from exc
    if value != 4.0:
        raise UsageError(f"--device {spec}: a test computation gave {value}, expected 4.0")
    return device


def check_labels(labels: str | None) -> None:
    """A ``--labels`` file that cannot be read is a usage error naming it."""
    if labels is None:
        return
    from camscope.metrics import load_labels

    try:
        load_labels(labels)
    except Exception as exc:  # noqa: BLE001 - any unreadable labels file: one line naming it
        cause = one_line(exc)
        raise UsageError(f"--labels {labels}: cannot read labels ({cause})") from exc


def _check_out_dir(out: Path) -> None:
    """The run folder can be created and written; creates nothing (a probe file is removed)."""
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: output folder cannot be written (it is a file)")
    if not probe.is_dir():
        raise UsageError(f"{out}: output folder cannot be written ({probe} is not a folder)")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".camscope-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{out}: output folder cannot be written ({exc.strerror or exc})") from exc


def _load(config: RunConfig, device: torch.device) -> LoadedModel:
    from camscope.run.testing import random_model

    if config.random_weights:
        return random_model(config.model, device)
    from camscope.models import load_model

    return load_model(
        config.model, weights=config.weights, weights_tag=config.weights_tag, device=device
    )


def _check_layer(loaded: LoadedModel, layer: str, device: torch.device) -> None:
    """One dry forward pass: the layer must give a spatial map (more than one position)."""
    from camscope import models

    check = getattr(models, "check_layer", None)
    if check is not None:
        try:
            check(loaded.model, layer, input_size=loaded.input_size)
        except (ValueError, ModelError) as exc:
            raise UsageError(str(exc)) from exc
        return
    _, module = resolve_layer(loaded.model, layer)
    seen: list[Any] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            loaded.model(torch.zeros(1, 3, *loaded.input_size, device=device))
    finally:
        handle.remove()
    out = seen[0] if seen else None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape is None or len(shape) < 3 or int(torch.tensor(shape[2:]).prod()) < 2:
        raise UsageError(
            f"--layer {layer}: its output {shape or type(out).__name__} has no spatial "
            "positions to map (choose a convolutional layer; `camscope layers` lists them)"
        )


def _weights_identity(config: RunConfig, loaded: LoadedModel) -> str:
    if config.random_weights:
        return "random (seed 0)"
    if config.weights:
        digest = hashlib.sha256()
        with open(config.weights, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return f"file sha256:{digest.hexdigest()[:32]}"
    return f"tag {loaded.weights_tag}" if loaded.weights_tag else loaded.weights_source


def _settings(ctx: RunContext) -> dict[str, Any]:
    c, m = ctx.config, ctx.loaded
    return {
        "model": m.name,
        "weights": _weights_identity(c, m),
        "layer": ctx.layer,
        "methods": list(ctx.methods),
        "method_options": {k: dict(sorted(v.items())) for k, v in ctx.options.items()},
        "target": ctx.target,
        "image_size": list(m.input_size),
        "mean": [float(v) for v in m.mean],
        "std": [float(v) for v in m.std],
        "metrics": c.metrics,
        "steps": c.steps if c.metrics else None,
        "save_maps": c.save_maps,
    }


def settings_hash(settings: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolve_methods(config: RunConfig) -> tuple[list[str], dict[str, dict[str, Any]]]:
    try:
        names = list(dict.fromkeys(_methods.canonical(m) for m in config.methods))
        return names, _methods.method_options(names, dict(config.method_options))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def prepare(
    config: RunConfig, *, check_folder: bool = True, loaded: LoadedModel | None = None
) -> RunContext:
    """Check every option and load what the run needs; creates nothing on disk.

    Args:
        config: the run's options.
        check_folder: check that the run folder can be written (Ray actors skip it).
        loaded: an already loaded model to use instead of ``config.model``.

    Raises:
        UsageError: any option that would make the run fail (message is one line).
    """
    config.check()
    check_labels(config.labels)
    methods, options = _resolve_methods(config)
    if check_folder:
        _check_out_dir(Path(config.out_dir))
    device = probe_device(config.device)
    try:
        loaded = loaded if loaded is not None else _load(config, device)
        loaded.model.to(device)
        layer, _ = resolve_layer(loaded.model, config.layer or loaded.default_layer)
        target = _target(config.target, loaded.categories)
        if target == "truth" and config.labels is None and len(loaded.categories) != 1000:
            raise TargetError(
                "--target truth needs --labels FILE: a wnid in a file name names an "
                "ImageNet-1k class only"
            )
    except (ModelError, TargetError) as exc:
        raise UsageError(str(exc)) from exc
    _check_layer(loaded, layer, device)
    if device.type != "cuda" and any(o.get("precision") == "fp16" for o in options.values()):
        raise UsageError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    for name in methods:  # options are checked by the method's own constructor
        try:
            _methods.build(name, loaded.model, layer, options[name]).close()
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{name}: {' '.join(str(exc).split())}") from exc
    ctx = RunContext(config, loaded, device, layer, methods, options, target, {}, "")
    ctx.settings = _settings(ctx)
    ctx.settings_hash = settings_hash(ctx.settings)
    return ctx
