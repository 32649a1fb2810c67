"""Hugging Face ``transformers`` image classifiers, as they come (no wrapper).

What camscope needs to know about a ``*ForImageClassification`` model, read from the model
itself (its modules and ``config``), never from a list of checkpoint names:

* the logits: its output is a ``ModelOutput`` whose ``.logits`` `camscope.logits.select_logits`
  already reads;
* class names: ``config.id2label``;
* the default CAM layer (`hf_default_layer`): for ViT-style token models (ViT, DeiT, BEiT,
  Data2Vec-Vision, DINOv2, the CLIP vision tower) the norm at the input of the *last* block
  (``vit.layers[-1].layernorm_before``): the classifier reads the class token of the last
  block, so the patch tokens of the last block's output get no gradient (pytorch-grad-cam's
  vision-transformer notes; its Hugging Face recipe takes the output of the block before it,
  ``layer[-2].output``, in transformers 4's naming). Swin-style hierarchical models: the final
  ``layernorm`` over the last stage's tokens (pytorch-grad-cam's Swin recipe). Convolutional
  models (ResNet, RegNet, ConvNeXt, EfficientNet, MobileViT, ...): None, i.e. camscope's
  generic rule (the last map before the network pools) applies;
* the input size (``config.image_size``) and the normalisation (``preprocessor_config.json``
  next to the weights).

* the token grid (`hf_token_grids`): how many prefix tokens (class, distillation, register
  tokens) come before the patch tokens and the (h, w) patch grid for an input of a given size,
  from the config (``patch_size``; Swin's ``depths``) and the embeddings' token parameters
  (``cls_token``, ``distillation_token``, ``register_tokens``, CLIP's ``class_embedding``),
  never guessed from the token count. `camscope.layers.layout` reshapes tokens to
  (N, C, h, w) with it (prefix tokens dropped) without a ``reshape_transform``.

`load_hf` reads a ``save_pretrained`` folder or ``hf:NAME`` from the local Hugging Face cache
only (``local_files_only=True``: never a download). ``transformers`` is an optional extra
(``pip install 'camscope[hf]'``); this module imports it only inside `load_hf`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from camscope.errors import one_line

__all__ = [
    "HFError",
    "HFModel",
    "hf_categories",
    "hf_default_layer",
    "hf_input_size",
    "hf_normalisation",
    "hf_token_grids",
    "import_transformers",
    "is_hf_model",
    "is_hf_spec",
    "load_hf",
]

log = logging.getLogger("camscope")

PREFIX = "hf:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the attribute of a transformer block that normalises the block's input (before attention)
_BLOCK_INPUT_NORMS = ("layernorm_before", "layer_norm1", "norm1")
# hierarchical (Swin-style) encoders: stages of `blocks`, a final `layernorm` over the tokens
_HIERARCHICAL = ("swin", "swinv2", "donut-swin", "maskformer-swin")


class HFError(Exception):
    """A Hugging Face model could not be loaded; the message is one line."""


@dataclass
class HFModel:
    """What `load_hf` returns (``camscope.models.load_model`` makes a ``LoadedModel`` of it)."""

    model: nn.Module
    name: str
    categories: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]
    source: str
    notes: list[str] = field(default_factory=list)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside camscope's transparent `LogitsModel`, or the model itself."""
    return model.__dict__.get("inner", model)


def is_hf_model(model: object) -> bool:
    """True for a ``transformers`` model (possibly inside camscope's ``LogitsModel``)."""
    inner = _unwrap(model) if isinstance(model, nn.Module) else model
    return type(inner).__module__.startswith("transformers.") and hasattr(inner, "config")


def is_hf_spec(name: str | None) -> bool:
    """True for ``hf:NAME`` or a folder holding a Hugging Face ``config.json``."""
    if not name:
        return False
    return name.startswith(PREFIX) or (Path(name) / "config.json").is_file()


def hf_default_layer(model: nn.Module) -> str | None:
    """The conventional CAM layer of a ``transformers`` image model, or None (generic rule).

    See the module docstring. Returns a canonical dotted name (``vit.layers.1.layernorm_before``).
    """
    if not is_hf_model(model):
        return None
    inner = _unwrap(model)
    modules = dict(inner.named_modules())
    model_type = str(getattr(inner.config, "model_type", ""))
    if model_type in _HIERARCHICAL or any(n.endswith(".blocks") for n in modules):
        finals = [n for n in modules if n.endswith("layernorm") and n.count(".") == 1]
        return finals[-1] if finals else None
    if not any(n.endswith("patch_embeddings") or n.endswith("patch_embedding") for n in modules):
        return None  # convolutional: the generic "last map before the pool" rule
    blocks = [
        (name, module)
        for name, module in modules.items()
        if isinstance(module, nn.ModuleList)
        and len(module)
        and any(hasattr(module[-1], a) for a in _BLOCK_INPUT_NORMS)
    ]
    if not blocks:
        return None
    name, block_list = blocks[-1]
    norm = next(a for a in _BLOCK_INPUT_NORMS if hasattr(block_list[-1], a))
    return f"{name}.{len(block_list) - 1}.{norm}"


# the embeddings' parameters that are prefix tokens (CLIP's class_embedding is one (C,) vector)
_TOKEN_PARAMETERS = ("cls_token", "class_embedding", "distillation_token", "register_tokens")
TokenGrid = tuple[int, tuple[int, int]]


def _find_hf(model: nn.Module) -> nn.Module | None:
    """The outermost ``transformers`` model in ``model`` (itself, unwrapped, or a submodule)."""
    if is_hf_model(model):
        return _unwrap(model)
    return next((m for m in model.modules() if is_hf_model(m)), None)


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))  # type: ignore[call-overload]


def _prefix_tokens(embeddings: nn.Module) -> int:
    """Class + distillation + register tokens the embeddings put before the patch tokens."""
    count = 0
    for name in _TOKEN_PARAMETERS:
        token = getattr(embeddings, name, None)
        if isinstance(token, nn.Parameter):
            count += 1 if token.dim() < 2 else int(token.shape[-2])
    return count


def hf_token_grids(model: nn.Module, size: tuple[int, int]) -> list[TokenGrid]:
    """The token layouts a ``transformers`` vision model declares for (H, W) inputs.

    Each entry is (prefix tokens, (h, w) patch grid); tokens are row-major after the prefix.
    ViT-style models (ViT, DeiT, BEiT, Data2Vec-Vision, DINOv2 with or without registers,
    I-JEPA, ViT-MSN, the CLIP / SigLIP vision tower): one entry, the grid of a
    ``patch_size`` convolution over the actual input (so also with
    ``interpolate_pos_encoding``), the prefix counted from the embeddings' class /
    distillation / register token parameters. Swin-style models: one entry per stage (no
    prefix; the input padded to whole patches, each patch merging halving the grid, rounding
    up). SegFormer: one entry per stage (overlapping patch embeddings: a convolution of
    ``patch_sizes[i]`` / ``strides[i]``, padding half the kernel). Anything else
    (convolutional models, no ``transformers`` model inside): ``[]``.

    ``model`` may be the model itself, camscope's ``LogitsModel`` around it, or any module
    holding one (a user's wrapper, a CLIP prompt classifier): the outermost one is read.
    """
    inner = _find_hf(model)
    if inner is None:
        return []
    config = inner.config
    config = getattr(config, "vision_config", None) or config
    if str(getattr(config, "model_type", "")) == "segformer":
        return _overlapping_stages(config, size)
    if getattr(config, "patch_size", None) is None:
        return []
    (height, width), (ph, pw) = size, _pair(config.patch_size)
    if str(getattr(config, "model_type", "")) in _HIERARCHICAL:
        grid, grids = (-(-height // ph), -(-width // pw)), []
        for _stage in getattr(config, "depths", ()):
            grids.append((0, grid))
            grid = (-(-grid[0] // 2), -(-grid[1] // 2))
        return grids
    embeddings = next(
        (
            m
            for m in inner.modules()
            if hasattr(m, "patch_embeddings") or hasattr(m, "patch_embedding")
        ),
        None,
    )
    if embeddings is None:
        return []
    return [(_prefix_tokens(embeddings), (height // ph, width // pw))]


def _overlapping_stages(config: object, size: tuple[int, int]) -> list[TokenGrid]:
    """SegFormer's stages: each a convolution (kernel k, stride s, padding k // 2) of the last."""
    (height, width), grids = size, []
    kernels, strides = getattr(config, "patch_sizes", ()), getattr(config, "strides", ())
    for kernel, stride in zip(kernels, strides, strict=False):
        pad = int(kernel) // 2
        height = (height + 2 * pad - int(kernel)) // int(stride) + 1
        width = (width + 2 * pad - int(kernel)) // int(stride) + 1
        grids.append((0, (height, width)))
    return grids


def hf_categories(model: nn.Module) -> list[str]:
    """Class names from ``config.id2label`` (index order); ``LABEL_i`` stays as it is."""
    config = _unwrap(model).config
    id2label: Mapping = getattr(config, "id2label", None) or {}
    labels = {int(k): str(v) for k, v in id2label.items()}
    count = int(getattr(config, "num_labels", len(labels)) or len(labels))
    return [labels.get(i, f"class {i}") for i in range(count)]


def hf_input_size(model: nn.Module, default: int = 224) -> tuple[int, int]:
    """``config.image_size`` as (H, W) (an int or a pair), else ``default`` square."""
    config = _unwrap(model).config
    size = getattr(config, "image_size", None)
    vision = getattr(config, "vision_config", None)
    if size is None and vision is not None:
        size = getattr(vision, "image_size", None)
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return (default, default)


def hf_normalisation(
    folder: str | Path | None,
) -> tuple[tuple[float, float, float], tuple[float, float, float], str | None]:
    """(mean, std, note) from a folder's ``preprocessor_config.json``.

    No such file (or no folder): ImageNet's mean and std, and a note saying so (the caller logs
    it and records it in the run's metadata). ``do_normalize: false`` gives mean 0, std 1.
    """
    path = Path(folder) / "preprocessor_config.json" if folder else None
    if path is None or not path.is_file():
        return (
            IMAGENET_MEAN,
            IMAGENET_STD,
            "no preprocessor_config.json next to the model: inputs normalised with ImageNet's "
            "mean and std",
        )
    data = json.loads(path.read_text())
    if data.get("do_normalize") is False:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None
    mean = tuple(float(v) for v in data.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in data.get("image_std", IMAGENET_STD))
    return mean, std, None  # type: ignore[return-value]


def _processor_size(folder: Path | None) -> tuple[int, int] | None:
    path = folder / "preprocessor_config.json" if folder else None
    if path is None or not path.is_file():
        return None
    data = json.loads(path.read_text())
    size = data.get("crop_size") or data.get("size")
    if isinstance(size, Mapping) and "height" in size and "width" in size:
        return (int(size["height"]), int(size["width"]))
    if isinstance(size, int):
        return (size, size)
    return None


def import_transformers():  # noqa: ANN201
    """``transformers``, or `HFError` naming the extra that installs it (the one such message)."""
    try:
        import transformers
    except ImportError as exc:
        raise HFError(
            "Hugging Face models need the transformers package: pip install 'camscope[hf]'"
        ) from exc
    return transformers


def _resolve(spec: str) -> tuple[str, Path | None, str]:
    """(what from_pretrained reads, the local folder if any, a phrase for messages)."""
    if spec.startswith(PREFIX):
        name = spec[len(PREFIX) :].strip()
        if not name:
            raise HFError("--model hf:NAME needs a model name after 'hf:'")
        return name, None, f"hf:{name}"
    folder = Path(spec)
    return str(folder), folder, f"folder {folder}"


def _cached_folder(name: str) -> Path | None:
    """The local snapshot folder of a cached hub model (for its preprocessor config)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: from_pretrained will say so
        return None


def load_hf(spec: str, *, pretrained: bool = True) -> HFModel:
    """A ``*ForImageClassification`` from a ``save_pretrained`` folder or ``hf:NAME`` (cache).

    Args:
        spec: a folder with ``config.json`` (+ weights), or ``hf:NAME`` read from the local
            Hugging Face cache only (never downloaded).
        pretrained: False builds the architecture from its config with random weights.

    Raises:
        HFError: transformers missing, the model not cached / not a folder, not an image
            classifier; one line.
    """
    transformers = import_transformers()
    source, folder, shown = _resolve(spec)
    if folder is None and pretrained:
        folder = _cached_folder(source)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=True)
    except OSError as exc:
        if spec.startswith(PREFIX):
            raise HFError(
                f"{shown} is not in the local Hugging Face cache (camscope never downloads); "
                f"fetch it once with `hf download {source}` on a machine with network, or pass "
                "a save_pretrained folder as --model DIR"
            ) from exc
        raise HFError(f"{shown}: no Hugging Face config.json there ({_first(exc)})") from exc
    auto = transformers.AutoModelForImageClassification
    try:
        if pretrained:
            model = auto.from_pretrained(source, local_files_only=True)
        else:
            model = auto.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise HFError(f"{shown}: not a loadable image classifier ({_first(exc)})") from exc
    model.eval()
    notes: list[str] = []
    mean, std, note = hf_normalisation(folder)
    if note:
        notes.append(note)
    size = _processor_size(folder) or hf_input_size(model)
    weights = "random initialisation (pretrained=False)" if not pretrained else shown
    return HFModel(
        model=model,
        name=spec,
        categories=hf_categories(model),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        input_size=size,
        source=f"transformers {type(model).__name__} ({weights})",
        notes=notes,
    )


def _first(exc: BaseException) -> str:
    return one_line(exc, 200)
