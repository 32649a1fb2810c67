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
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from camscope.classes import TargetError, parse_target_spec
from camscope.errors import one_line
from camscope.io import DEFAULT_MAX_PIXELS
from camscope.layers import check_layer, resolve_layer
from camscope.methods.targets import NamedTarget, import_target, is_target_spec
from camscope.metrics import (
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    DEFAULT_STEPS,
    ROAD_FRACTIONS,
    ROAD_NOISE,
)
from camscope.models import LoadedModel, ModelError
from camscope.run import _methods
from camscope.tasks.registry import TASK_OPTIONS, TASKS, TaskParams, get_task

__all__ = [
    "SAVE_MAPS",
    "Option",
    "RunConfig",
    "RunContext",
    "UsageError",
    "click_options",
    "config_from_record",
    "config_record",
    "from_command_line",
    "options",
    "prepare",
    "probe_device",
]

log = logging.getLogger("camscope")

#: ``--save-maps`` choices; ``both`` (the default) writes the .npy map and the .png overlay.
SAVE_MAPS = {"both": ("npy", "png"), "npy": ("npy",), "png": ("png",), "none": ()}
DEFAULT_METHODS = ("gradcam", "ablationcam", "scorecam")


class UsageError(ValueError):
    """Arguments that prevent a run from starting; nothing has been written (exit code 2)."""


@dataclass(frozen=True)
class Option:
    """How one `RunConfig` field is offered on the command line and checked.

    Attributes:
        help: the ``--help`` text.
        flags: the command-line spellings (``("--out", "-o")``); empty: not a flag.
        kind: ``int``, ``str``, ``"flag"`` (a boolean switch), ``"file"`` (an existing file),
            ``"list"`` (comma-separated, a tuple in the config) or ``"multiple"`` (repeatable:
            one value as given, several as a tuple).
        minimum: the smallest value of an ``int`` option (None allowed when it is the default).
        choices: the values a ``str`` option may take.
        show_default: show the default in ``--help``.
        parse: command-line text -> the field's value (``--shard 0/4`` -> ``(0, 4)``);
            ValueError with one line when the text is not valid.
    """

    help: str
    flags: tuple[str, ...] = ()
    kind: Any = str
    minimum: int | None = None
    choices: tuple[str, ...] | None = None
    show_default: bool = False
    parse: Any = None

    @property
    def flag(self) -> str:
        """The long flag, for messages (``--batch-size``; ``--road`` of ``--road/--no-road``)."""
        return self.flags[0].split("/")[0] if self.flags else ""


def _opt(default: Any, help: str, *flags: str, **kw: Any) -> Any:
    """A `RunConfig` field declared with its `Option` (the field's one declaration)."""
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"option": Option(help, tuple(flags), **kw)})


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError("use I/N, e.g. 0/4") from None
    return i, n


@dataclass(frozen=True)
class RunConfig:
    """Everything a user can ask of a run (picklable; Ray actors get a copy).

    This is the ONE declaration of the run's options: each field carries its default, help,
    flags and checks (`Option`); ``camscope run``'s flags are made from it (`click_options`),
    `check` validates from it, and run.json is written from it and read back into it
    (`config_record`, `config_from_record`). The methods' own options come from the method
    registry: ``method_options`` holds them as given (flag key or constructor keyword ->
    value) or, as run.json records them, per method (method -> {constructor keyword: value}).
    """

    inputs: tuple[str, ...] = _opt(tuple, "Image files, folders (searched recursively), globs.")
    task: str = _opt(
        "classify",
        "classify (one map per image), detect (one map per detected object), segment (a class "
        "over its predicted region; --target CLASS, default every predicted class), prompt "
        '(CLIP: --target "a photo of a cat", repeatable).',
        "--task",
        choices=tuple(TASKS),
        show_default=True,
    )
    score_threshold: float = _opt(
        0.5,
        "--task detect: explain the detections scoring at least this (0..1).",
        "--score-threshold",
        kind=float,
        show_default=True,
    )
    max_objects: int | None = _opt(
        None,
        "--task detect/segment: explain at most this many objects per image (best first).",
        "--max-objects",
        kind=int,
        minimum=1,
    )
    out_dir: str = _opt(
        "camscope-output",
        "Run folder (an existing run with the same settings is resumed).",
        "--out",
        "-o",
        show_default=True,
    )
    methods: tuple[str, ...] = _opt(
        DEFAULT_METHODS,
        "Comma-separated CAM methods (`camscope methods` lists them).",
        "--methods",
        "-m",
        kind="list",
        show_default=True,
    )
    method_options: dict[str, Any] = _opt(dict, "The methods' own options (registry flags).")
    model: str | None = _opt(
        None,
        "resnet50 (default when its weights can be had), efficientnet_lite0 (bundled, "
        "offline), or any torchvision/timm classifier. --task detect/segment: a torchvision "
        "detection/segmentation name; prompt: a CLIP folder or hf:NAME; any task: "
        "module:function returning the model (or a dict with model, tokenizer, categories, "
        "mean, std, input_size).",
        "--model",
    )
    weights: str | None = _opt(
        None,
        "Local state dict (.pth/.safetensors) instead of downloading.",
        "--weights",
        kind="path",
    )
    weights_tag: str | None = _opt(
        None, "torchvision weights tag (default IMAGENET1K_V1 for resnet50).", "--weights-tag"
    )
    random_weights: bool = _opt(
        False,
        "Seeded random weights for --model (tests and offline smoke runs; the maps mean nothing).",
        "--random-weights",
        kind="flag",
    )
    layer: str | None = _opt(
        None, "Target layer, e.g. 'layer4[-1]', 'layer3' (default per model).", "--layer"
    )
    target: str | int | tuple[str, ...] | None = _opt(
        None,
        "top1 (default: each image's top-1 prediction), truth (its true class, from an "
        "ImageNet wnid in the file name or --labels), a class index or name for every "
        "image, or module:function, a callable target f(output_row) -> scalar (multi-label, "
        "regression, anything). --task segment: a class; --task prompt: a text prompt "
        "(several: repeat --target, or separate them with |).",
        "--target",
        kind="multiple",
    )
    device: str = _opt(
        "auto",
        "auto, cpu, cuda or cuda:N (checked before the first image).",
        "--device",
        show_default=True,
    )
    batch_size: int = _opt(
        8,
        "Images per batch (also: images per results part file).",
        "--batch-size",
        "-b",
        kind=int,
        minimum=1,
        show_default=True,
    )
    max_pixels: int | None = _opt(
        DEFAULT_MAX_PIXELS,
        "Refuse images with more pixels than this (decompression-bomb guard).",
        "--max-pixels",
        kind=int,
        minimum=1,
        show_default=True,
    )
    metrics: bool = _opt(
        False,
        "Also measure faithfulness per image and write metrics.csv, summary.csv, "
        "sanity.parquet, report.html and report.md.",
        "--metrics",
        kind="flag",
    )
    road: bool = _opt(
        True,
        "With --metrics, also measure ROAD (Rong et al. 2022: MoRF, LeRF and their combination). "
        "Its noisy linear imputation is a sparse solve per image and fraction, the dearest metric "
        "on a CPU (BENCHMARKS.md); --no-road leaves it out (and resumes a metrics run made "
        "before ROAD existed).",
        "--road/--no-road",
        kind="flag",
        show_default=True,
    )
    blur_deletion: bool = _opt(
        False,
        "With --metrics, also measure deletion with a blurred baseline (the removed pixels "
        "taken from the image blurred, 11x11 Gaussian, sigma 5) besides the mean colour: "
        "deletion_blur_auc, and the report's ranking robustness across the two baselines. "
        "It costs --steps more forward passes per image and method.",
        "--blur-deletion",
        kind="flag",
    )
    labels: str | None = _opt(
        None,
        "CSV with file and class columns (true labels for accuracy).",
        "--labels",
        kind="file",
    )
    boxes: str | None = _opt(
        None,
        "Ground-truth boxes for the localisation metrics (pointing game, energy game, relevance "
        "mass and rank): a CSV (file, x0, y0, x1, y1[, class]), a Pascal VOC .xml or folder of "
        "them, or a COCO .json; boxes are in the original image's pixels. Images without boxes "
        "are left out of these metrics.",
        "--boxes",
    )
    steps: int = _opt(
        DEFAULT_STEPS,
        "Deletion/insertion steps (with --metrics).",
        "--steps",
        kind=int,
        minimum=1,
        show_default=True,
    )
    sanity_images: int = _opt(
        8,
        "Images in the sanity check's own sample (with --metrics; 0 skips it). It costs, per "
        "method, about (number of model blocks + 1) x this many images' maps: seconds for "
        "Grad-CAM, minutes for ScoreCAM on a CPU.",
        "--sanity-images",
        kind=int,
        minimum=0,
        show_default=True,
    )
    save_maps: str = _opt(
        "both",
        "Per-image files: the 224x224 float32 .npy map (~200 KB) and/or the .png overlay; "
        "the feature-resolution map is always in the results table.",
        "--save-maps",
        choices=tuple(SAVE_MAPS),
        show_default=True,
    )
    inputs_from: str | None = _opt(
        None,
        "File listing inputs: one path per line, or a CSV with a 'file' column.",
        "--inputs-from",
        kind="file",
    )
    shard: tuple[int, int] | None = _opt(
        None,
        "I/N: take the I-th of N deterministic parts of the inputs (0-based).",
        "--shard",
        parse=_parse_shard,
    )
    overwrite: bool = _opt(
        False,
        "Remove an earlier run's outputs in --out and start afresh.",
        "--overwrite",
        kind="flag",
    )
    argv: tuple[str, ...] | None = _opt(None, "The command line, recorded in run.json.")

    def check(self) -> None:
        """Every check that needs neither the model nor the device; UsageError on the first."""
        if not self.inputs and not self.inputs_from:
            raise UsageError("no inputs given (image files, folders, globs or --inputs-from)")
        if not self.methods:
            raise UsageError(f"no method given; choose from {', '.join(_methods.method_names())}")
        for name, option in options().items():
            _check_value(option, getattr(self, name))
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise UsageError(f"--shard {i}/{n}: need 0 <= I < N (e.g. 0/4 .. 3/4)")
        if self.boxes is not None:
            check_boxes(self.boxes)
        if self.blur_deletion and not self.metrics:
            raise UsageError("--blur-deletion needs --metrics (it is a setting of deletion)")
        if self.weights is not None and self.random_weights:
            raise UsageError("--weights and --random-weights exclude each other")
        if not 0.0 <= float(self.score_threshold) <= 1.0:
            raise UsageError(f"--score-threshold must be in [0, 1], got {self.score_threshold}")
        self._check_task()

    def _check_task(self) -> None:
        """Options the task does not read are refused (never silently ignored)."""
        task, declared = get_task(self.task), options()
        if isinstance(self.target, tuple) and not task.several_targets:
            raise UsageError(
                f"--target given {len(self.target)} times: --task {task.name} takes one"
            )
        for name in TASK_OPTIONS:
            if name not in task.options and getattr(self, name) != _default(name):
                raise UsageError(f"{declared[name].flag} is not used by --task {task.name}")
        if task.per_object:
            for name in ("boxes", "labels", "blur_deletion"):
                if getattr(self, name) not in (None, False):
                    flag = declared[name].flag
                    raise UsageError(f"{flag} is for classification runs, not --task {task.name}")


def options() -> dict[str, Option]:
    """Every `RunConfig` field offered as a flag -> its `Option`, in declaration order."""
    found = {f.name: f.metadata.get("option") for f in fields(RunConfig)}
    return {name: o for name, o in found.items() if o is not None and o.flags}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(option: Option, value: Any) -> None:
    """UsageError (one line naming the flag) when ``value`` breaks ``option``'s declaration."""
    low = option.minimum
    if low is not None and value is not None and not (_is_int(value) and value >= low):
        raise UsageError(f"{option.flag} must be an integer >= {option.minimum}, got {value!r}")
    if option.choices is not None and value not in option.choices:
        raise UsageError(f"{option.flag} must be one of {', '.join(option.choices)}")
    if option.kind == "file" and value is not None and not os.path.isfile(value):
        raise UsageError(f"{option.flag} {value}: no such file")


def click_options(names: Sequence[str] | None = None) -> list[Any]:
    """Click decorators for the `RunConfig` fields ``names`` (default: every flag), in order.

    Each value arrives under the field's name, ready for `RunConfig` (`from_command_line`).
    """
    import click  # the CLI's dependency; imported here to keep the run light

    declared = options()
    decorators = []
    for name in names or list(declared):
        o, default = declared[name], _default(name)
        kw: dict[str, Any] = {"help": o.help}
        if o.kind == "flag":
            kw.update(is_flag=True, default=default, show_default=o.show_default)
        elif o.kind == "multiple":  # repeatable; one value arrives alone, several as a tuple
            kw.update(multiple=True, default=default, type=str)
        else:
            kind = {"path": click.Path(dir_okay=False), "file": click.Path(dir_okay=False)}
            kw["type"] = click.Choice(o.choices) if o.choices else kind.get(o.kind, o.kind)
            if o.kind == "list":
                kw["type"] = str
            kw["default"] = ",".join(default) if o.kind == "list" else default
            kw["show_default"] = o.show_default
        decorators.append(click.option(*o.flags, name, **kw))
    return decorators


def _default(name: str) -> Any:
    f = next(f for f in fields(RunConfig) if f.name == name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def from_command_line(
    inputs: Sequence[str],
    values: dict[str, Any],
    method_options: dict[str, Any],
    argv: Sequence[str] | None = None,
) -> RunConfig:
    """The `RunConfig` of ``camscope run``'s parsed flags (`click_options`).

    ``values``: field name -> the flag's value (text for ``list`` and parsed options);
    ``method_options``: the registry flags' values (None = not given). Raises UsageError.
    """
    declared, given = options(), {}
    for name, value in values.items():
        o = declared[name]
        if o.kind == "list" and isinstance(value, str):
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        elif o.kind == "multiple":
            value = None if not value else value[0] if len(value) == 1 else tuple(value)
        elif o.parse is not None and value is not None:
            try:
                value = o.parse(value)
            except ValueError as exc:
                raise UsageError(f"{o.flag} {value}: {exc}") from None
        given[name] = value
    return RunConfig(
        inputs=tuple(inputs),
        method_options={k: v for k, v in method_options.items() if v is not None},
        argv=None if argv is None else tuple(argv),
        **given,
    )


def _target(spec: str | int | None, categories: list[str]) -> Any:
    """``--target`` resolved: None (top-1), ``"truth"``, an index or a `NamedTarget`.

    None explains each image's top-1 class, ``"truth"`` its true class; ``module:function``
    imports a callable target (`camscope.methods.targets.import_target`).
    """
    if spec is None:
        return None
    if is_target_spec(spec):
        try:
            return import_target(str(spec))
        except ValueError as exc:
            raise TargetError(str(exc)) from None
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
    params: TaskParams | None = None  # a per-object task's settings (None: classification)

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


def check_boxes(boxes: str) -> None:
    """Read the --boxes file once (UsageError, one line, when it cannot be read)."""
    from camscope.io.boxes import BoxError, load_boxes

    try:
        load_boxes(boxes)
    except (BoxError, OSError) as exc:
        raise UsageError(f"--boxes {exc}") from None


def _boxes_identity(boxes: str) -> str:
    """sha256 of the --boxes file (or of a folder's .xml files, by name and content)."""
    path = Path(boxes)
    digest = hashlib.sha256()
    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"sha256:{digest.hexdigest()[:32]}"


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


def _check_gradient(loaded: LoadedModel, layer: str, device: torch.device, target: Any) -> None:
    """Refuse a layer the target does not depend on (its gradient is exactly zero there).

    One Grad-CAM pass on a seeded noise image: a ViT's last block, say, gets no gradient for
    any input, so the run would only draw empty maps.
    """
    from camscope.methods import GradCAM
    from camscope.methods.base import NoGradientError

    noise = torch.randn(1, 3, *loaded.input_size, generator=torch.Generator().manual_seed(0)).to(
        device
    )
    try:
        with GradCAM(loaded.model, layer, refuse_no_gradient=True) as cam:
            given = target if isinstance(target, int | NamedTarget) else None
            cam.explain(noise, targets=given)
    except NoGradientError as exc:
        raise UsageError(str(exc)) from exc


def _check_layer(loaded: LoadedModel, layer: str, device: torch.device) -> None:
    """One dry forward pass: the layer must give a spatial map (more than one position)."""
    try:
        check_layer(loaded.model, layer, input_size=loaded.input_size)
    except (ValueError, ModelError) as exc:
        raise UsageError(str(exc)) from exc


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


def _target_setting(target: Any) -> Any:
    """The resolved target as run.json records it (a callable by its spec, prompts a list)."""
    if isinstance(target, NamedTarget):
        return str(target)
    return list(target) if isinstance(target, tuple) else target


def _settings(ctx: RunContext) -> dict[str, Any]:
    c, m = ctx.config, ctx.loaded
    out = {
        "model": m.name,
        "weights": _weights_identity(c, m),
        "layer": ctx.layer,
        "methods": list(ctx.methods),
        "method_options": {k: dict(sorted(v.items())) for k, v in ctx.options.items()},
        "target": _target_setting(ctx.target),
        "image_size": list(m.input_size),
        "mean": [float(v) for v in m.mean],
        "std": [float(v) for v in m.std],
        "metrics": c.metrics,
        "steps": c.steps if c.metrics else None,
        "save_maps": c.save_maps,
    }
    if c.metrics and c.road:  # ROAD's fractions and noise change the per-image numbers
        out["road"] = {"fractions": list(ROAD_FRACTIONS), "noise": ROAD_NOISE}
    if c.metrics and c.blur_deletion:  # only when on: the hashes of other runs stay as they were
        out["blur_deletion"] = {"kernel_size": BLUR_KERNEL_SIZE, "sigma": BLUR_SIGMA}
    if c.boxes:
        out["boxes"] = _boxes_identity(c.boxes)
    if ctx.params is not None:  # classification settings (and hashes) stay as they were
        p = ctx.params
        out["task"] = c.task
        out["task_params"] = {"score_threshold": p.score_threshold, "max_objects": p.max_objects}
    return out


def settings_hash(settings: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _resolve_methods(config: RunConfig) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The selected methods and their options, per method.

    ``config.method_options`` holds options as given (flag key or constructor keyword ->
    value: the registry splits them among the methods) and/or per method (method -> {constructor
    keyword: value}, as run.json records them: two methods' options that share a keyword stay
    apart).
    """
    try:
        names = list(dict.fromkeys(_methods.canonical(m) for m in config.methods))
        given = dict(config.method_options)
        per_method = {k: given.pop(k) for k in list(given) if isinstance(given[k], dict)}
        options = _methods.method_options(names, given)
        for name, own in per_method.items():
            method = _methods.canonical(name)
            if method not in options:
                raise ValueError(f"options given for {method}, which is not selected")
            options[method].update(_methods.own_options(method, own))
        return names, options
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


#: run.json keys that `config_record` writes besides ``settings`` (read back by
#: `config_from_record`).
_RECORDED = ("weights_file", "weights_tag", "batch_size", "shard", "argv", "boxes_file")


def config_record(ctx: RunContext) -> dict[str, Any]:
    """The run's configuration as run.json records it (`config_from_record` reads it back).

    ``settings`` (what changes a per-image result; the methods' options per method) and its
    hash, then the weights file or tag, the batch size, the shard and the command line.
    """
    cfg, loaded = ctx.config, ctx.loaded
    return {
        "settings": ctx.settings,
        "settings_hash": ctx.settings_hash,
        "weights_file": cfg.weights,
        "weights_tag": None if cfg.weights or cfg.random_weights else loaded.weights_tag,
        "batch_size": cfg.batch_size,
        "shard": list(cfg.shard) if cfg.shard else None,
        "argv": list(cfg.argv) if cfg.argv is not None else None,
        "boxes_file": cfg.boxes,
    }


def config_from_record(run: dict[str, Any], **given: Any) -> RunConfig:
    """The `RunConfig` that reproduces the settings of ``run`` (run.json), with ``given`` on top.

    Reads every run folder of this format (`runfolder.FORMAT_VERSION`). The
    methods' options come back per method, so ``prepare`` gives the same settings and hash.
    """
    s = run["settings"]
    recorded = {
        "methods": tuple(s["methods"]),
        "method_options": {m: dict(o) for m, o in s.get("method_options", {}).items()},
        "model": s["model"],
        "weights": run.get("weights_file"),
        "weights_tag": run.get("weights_tag"),
        "random_weights": str(s.get("weights", "")).startswith("random"),
        "layer": s["layer"],
        "target": s.get("target"),
        "save_maps": s.get("save_maps", "both"),
        "metrics": bool(s.get("metrics", False)),
        "blur_deletion": bool(s.get("blur_deletion")),
    }
    if s.get("steps") is not None:
        recorded["steps"] = s["steps"]
    if s.get("boxes") and run.get("boxes_file"):
        recorded["boxes"] = run["boxes_file"]
    if s.get("task"):
        recorded.update(task=s["task"], **s.get("task_params", {}))
        if isinstance(s.get("target"), list):
            recorded["target"] = "|".join(s["target"])
    return RunConfig(**{**recorded, **given})


def _task_model(config: RunConfig, device: torch.device, loaded: LoadedModel | None) -> Any:
    """The task's model, layer and resolved ``--target`` (UsageError, one line)."""
    task = get_task(config.task)
    try:
        if loaded is None:
            loaded = task.load(config.model, random_weights=config.random_weights, device=device)
        layer, _ = resolve_layer(loaded.model, config.layer or loaded.default_layer)
        if task.resolve is None and config.target is not None:
            raise TargetError(f"--task {task.name} takes no --target (it explains every object)")
        target = task.resolve(config.target, loaded) if task.resolve else None
    except (ModelError, TargetError) as exc:
        raise UsageError(str(exc)) from exc
    return loaded, layer, target


def _prepare_objects(
    config: RunConfig,
    methods: list[str],
    options: dict[str, dict[str, Any]],
    device: torch.device,
    loaded: LoadedModel | None,
) -> RunContext:
    """`prepare` for a per-object task (camscope.tasks.registry): model, layer, methods."""
    task = get_task(config.task)
    loaded, layer, target = _task_model(config, device, loaded)
    params = TaskParams(config.score_threshold, config.max_objects, target)
    try:
        probe = task.probe(loaded, params)
    except (ValueError, TypeError, ModelError) as exc:
        raise UsageError(f"--task {task.name}: {one_line(exc)}") from exc
    for name in methods:  # options are checked by the method's own constructor
        try:
            _methods.build(name, probe, layer, options[name]).close()
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{name}: {' '.join(str(exc).split())}") from exc
    ctx = RunContext(config, loaded, device, layer, methods, options, target, {}, "", params)
    ctx.settings = _settings(ctx)
    ctx.settings_hash = settings_hash(ctx.settings)
    return ctx


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
    if get_task(config.task).per_object:
        return _prepare_objects(config, methods, options, device, loaded)
    try:
        loaded = loaded if loaded is not None else _load(config, device)
        loaded.model.to(device)
        layer, _ = resolve_layer(loaded.model, config.layer or loaded.default_layer)
        target = _target(config.target, loaded.categories)
        if isinstance(target, NamedTarget) and config.metrics:
            raise TargetError(
                f"--metrics needs a class target: the metrics read a class's probability, "
                f"which --target {target} does not name"
            )
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
    target_free = True  # EigenCAM reads activations only: no target to depend on the layer
    for name in methods:  # options are checked by the method's own constructor
        try:
            cam = _methods.build(name, loaded.model, layer, options[name])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{name}: {' '.join(str(exc).split())}") from exc
        target_free &= bool(getattr(cam, "always_eigen", False)) and not cam.uses_gradients
        cam.close()
    if not target_free:
        _check_gradient(loaded, layer, device, target)
    ctx = RunContext(config, loaded, device, layer, methods, options, target, {}, "")
    ctx.settings = _settings(ctx)
    ctx.settings_hash = settings_hash(ctx.settings)
    return ctx
