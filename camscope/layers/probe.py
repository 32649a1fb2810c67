"""Probing layers with one dry forward pass: what each outputs, and whether it is a CAM layer.

`check_layer` refuses, before any image is processed, a layer whose output is not a spatial map;
`probe_layers` lists every module (`camscope layers`); `default_layer` is the conventional layer
of a family (`camscope.layers.defaults`) or else the last map before the network pools.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from camscope.errors import LayerError, one_line
from camscope.layers.defaults import layer_by_structure
from camscope.layers.layout import (
    CHANNELS_FIRST,
    CustomLayout,
    Layout,
    LayoutError,
    detect_layout,
    read_transform,
)
from camscope.layers.lookup import last_child, resolve_layer

__all__ = [
    "LayerCheck",
    "LayerProbe",
    "check_layer",
    "default_layer",
    "input_channels",
    "probe_layers",
    "zero_image",
]

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
    model: nn.Module,
    size: tuple[int, int],
    modules: dict[str, nn.Module],
    channels: int | None = None,
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
            model(zero_image(model, size, channels))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return order, seen


def input_channels(model: nn.Module) -> int:
    """The channels the model's images have: the first convolution's input channels, else 3."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else 3


def zero_image(
    model: nn.Module, size: tuple[int, int], channels: int | None = None
) -> torch.Tensor:
    """A (1, channels, H, W) zero image on the model's device, in its floating dtype.

    ``channels`` None: `input_channels` (3 for RGB models, 1 for a one-channel ``conv1``).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    channels = input_channels(model) if channels is None else int(channels)
    return torch.zeros(1, channels, *size, device=device, dtype=dtype)


def _alt_size(size: tuple[int, int]) -> tuple[int, int]:
    return (2 * size[0], 2 * size[1])


def _read_output(
    model: nn.Module,
    outputs: list,
    size: tuple[int, int],
    alt: tuple | None = None,
    *,
    allow_point: bool = False,
) -> tuple[tuple[int, ...] | None, Layout | None, str]:
    """(shape, layout, reason) for one module's recorded outputs (`check_layer`'s allow_point)."""
    if not outputs:
        return None, None, "does not run in the forward pass"
    first = outputs[0]
    if not isinstance(first, torch.Tensor):
        return None, None, f"outputs a {type(first).__name__}, not a tensor"
    shape = tuple(first.shape)
    if len(outputs) > 1:
        return shape, None, f"runs {len(outputs)} times in one forward pass"
    if len(shape) == 4 and shape[2:] == (1, 1):
        if allow_point and shape[0] == 1:
            return shape, Layout(CHANNELS_FIRST, (1, 1), int(shape[1])), ""
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
    child = last_child(model, chosen)
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
    return layer_by_structure(model) or _default_by_probe(model, size)


def _valid_choices(model: nn.Module, size: tuple[int, int], refused: str, limit: int = 6) -> str:
    """The valid layers, in words; the default only where it is valid and not ``refused``."""
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
    if default in usable and default != refused:
        lead = f"valid choices: the default {default}" + (", or e.g. " if shown else "")
    else:  # the default layer is the refused one (a small input) or not a map either
        lead = f"valid choices (for a {size[0]}x{size[1]} input): e.g. "
    return lead + ", ".join(shown) + " (camscope layers --model NAME lists them all)"


def _custom_layout(
    name: str,
    output: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    allow_point: bool = False,
) -> CustomLayout:
    shape = tuple(output.shape)
    try:
        layout = read_transform(transform, output)
    except LayoutError as exc:
        raise LayerError(f"--layer {name}: output {shape}; {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code
        raise LayerError(
            f"--layer {name}: output {shape}; reshape_transform fails on it ({one_line(exc)})"
        ) from exc
    if layout.grid[0] * layout.grid[1] < 2 and not allow_point:
        raise LayerError(
            f"--layer {name}: output {shape}; reshape_transform returns a 1x1 map, which has "
            "no spatial extent"
        )
    return layout


def check_layer(
    model: nn.Module,
    layer: str | nn.Module,
    input_size: tuple[int, int] = (224, 224),
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    channels: int | None = None,
    allow_point: bool = False,
) -> LayerCheck:
    """Refuse, before any image is processed, a layer whose output is not a spatial map.

    One dry forward pass of a zero image (two where channels-first and channels-last cannot be
    told apart from one shape), hooks removed after. Accepted: (N, C, h, w) maps,
    channels-last (N, h, w, C) maps (Swin, ConvNeXt-style norms) and ViT/DeiT tokens
    (N, P + h*w, C), each only where its grid fits the input (`camscope.layers.layout`); or whatever
    ``reshape_transform`` turns into an (N, C, h, w) map with more than one position.

    Args:
        model: the network.
        layer: a layer path or module (`resolve_layer`).
        input_size: the (H, W) of the images.
        reshape_transform: a user's callable from the layer's output to (N, C, h, w).
        channels: the images' channels (default `input_channels`: the first convolution's).
        allow_point: accept an (N, C, 1, 1) output (or a 1x1 ``reshape_transform`` map) as a
            1x1 channels-first map, whose CAM is constant, so empty (what pytorch-grad-cam
            returns for a layer that small; `BaseCAM` passes True, the CLI does not).

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
    _order, seen = _dry_forward(model, size, {name: module}, channels)
    outputs = seen[name]
    if reshape_transform is not None and len(outputs) == 1 and torch.is_tensor(outputs[0]):
        layout = _custom_layout(name, outputs[0], reshape_transform, allow_point)
        return LayerCheck(name, module, tuple(outputs[0].shape), layout, size)
    shape, layout, reason = _read_output(model, outputs, size, allow_point=allow_point)
    if layout is None and "ambiguous" in reason:
        try:
            _o, alt = _dry_forward(model, _alt_size(size), {name: module}, channels)
            alt_shape = (tuple(alt[name][0].shape), _alt_size(size))
            shape, layout, reason = _read_output(model, outputs, size, alt_shape)
        except Exception:  # noqa: BLE001 - fixed-size model: the ambiguity stands
            pass
    if layout is None:
        shown = f"output {shape}" if shape is not None else "not usable"
        raise LayerError(
            f"--layer {name}: {shown}: {reason}; not a spatial map, so no CAM; "
            f"{_valid_choices(model, size, name)}"
        )
    return LayerCheck(name, module, shape, layout, size)  # type: ignore[arg-type]
