"""Reading a layer's output as a spatial map (N, C, h, w): layouts, their detection and inverse.

CAMs weight the channels of a feature map ``A`` (N, C, h, w). Convolutional layers output that
directly; transformers do not:

* ViT / DeiT blocks output tokens (N, P + h*w, C): P prefix tokens (class, distillation,
  register tokens) followed by one token per image patch, row-major;
* Swin stages and ConvNeXt-style norms output channels-last maps (N, h, w, C).

A `Layout` says which of these a layer's output is and converts both ways: ``to_map`` gives
(N, C, h, w) (prefix tokens dropped), ``from_map`` is its inverse for methods that feed modified
activations back into the network (prefix tokens put back unchanged).

`detect_layout` decides the layout from the output's shape, the input size and the model, never
by guessing: a reading is accepted only if its grid matches the image (one stride for both axes;
for tokens, the model's own patch grid and prefix-token count where it declares them, e.g.
timm's ``patch_embed`` and ``num_prefix_tokens``, torchvision's ``image_size``/``patch_size`` or
a Hugging Face config: `model_token_grid`).
A shape that fits no reading, or fits two (a (N, 8, 8, 8) map: channels first or last?) without
a second forward pass at another input size to tell them apart, is refused with a
`LayoutError` that says why. The caller (`camscope.layers.check_layer`) adds the layer's name and
the valid choices.

A user's ``reshape_transform`` is a `CustomLayout` (`read_transform`), whose inverse is derived
from element ids; `spatial_view` gives the layout a method reads a layer through. Every layout
follows one protocol, `MapLayout`.

Example::

    >>> import torch
    >>> layout = detect_layout((2, 197, 192), (224, 224), batch=2)
    >>> layout.describe()
    'tokens (1 prefix + 14x14 grid, 192 channels)'
    >>> tokens = torch.randn(2, 197, 192)
    >>> layout.to_map(tokens).shape
    torch.Size([2, 192, 14, 14])
    >>> torch.equal(layout.from_map(layout.to_map(tokens), tokens), tokens)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from camscope.errors import LayerError

__all__ = [
    "CustomLayout",
    "Layout",
    "LayoutError",
    "MapLayout",
    "detect_layout",
    "model_token_grid",
    "read_transform",
    "spatial_view",
]

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"
TOKENS = "tokens"

Shape = Sequence[int]
ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


class MapLayout(Protocol):
    """What every layout offers (`Layout`, `CustomLayout`): the one protocol of a layer's view."""

    kind: str
    grid: tuple[int, int]
    channels: int

    def describe(self) -> str:
        """One phrase for messages and ``camscope layers``."""

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output (or its gradient) as (N, C, h, w)."""

    def from_map(self, feature_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) maps back in the layer's layout (``like``: one or B outputs)."""


class LayoutError(ValueError):
    """A layer's output cannot be read as a spatial map (the message says why, one line)."""


@dataclass(frozen=True)
class Layout:
    """How a layer's output maps onto (N, C, h, w).

    Attributes:
        kind: ``"channels_first"`` (N, C, h, w), ``"channels_last"`` (N, h, w, C) or
            ``"tokens"`` (N, prefix + h*w, C).
        grid: (h, w), the spatial size of the map.
        channels: C.
        prefix: tokens before the patch grid (class / distillation / register tokens), dropped
            by `to_map` and restored by `from_map`.
    """

    kind: str
    grid: tuple[int, int]
    channels: int
    prefix: int = 0

    def describe(self) -> str:
        """One phrase, e.g. ``tokens (1 prefix + 14x14 grid, 192 channels)``."""
        h, w = self.grid
        if self.kind == TOKENS:
            return f"tokens ({self.prefix} prefix + {h}x{w} grid, {self.channels} channels)"
        return f"{self.kind.replace('_', '-')} map ({self.channels} channels, {h}x{w})"

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The layer's output (or its gradient) as (N, C, h, w); a view where possible."""
        h, w = self.grid
        if self.kind == CHANNELS_FIRST:
            return output
        if self.kind == CHANNELS_LAST:
            return output.permute(0, 3, 1, 2)
        patches = output[:, self.prefix :, :]
        return patches.reshape(output.shape[0], h, w, output.shape[-1]).permute(0, 3, 1, 2)

    def from_map(self, feature_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Inverse of `to_map`: (N, C, h, w) back to the layer's layout.

        ``like`` is an output of the layer (batch 1 or N) that supplies the prefix tokens, which
        are put back unchanged.
        """
        if self.kind == CHANNELS_FIRST:
            return feature_map
        if self.kind == CHANNELS_LAST:
            return feature_map.permute(0, 2, 3, 1)
        n, c = feature_map.shape[:2]
        patches = feature_map.permute(0, 2, 3, 1).reshape(n, -1, c)
        prefix = like[:, : self.prefix, :].to(patches.dtype)
        return torch.cat([prefix.expand(n, -1, -1), patches], dim=1)


class CustomLayout:
    """A user's ``reshape_transform`` (pytorch-grad-cam's argument): output -> (N, C, h, w).

    Its inverse (`from_map`, for methods that feed modified activations back into the network)
    is derived, not asked for: the transform is applied to a tensor holding each element's own
    index, which tells where every element of the map came from. That works for every transform
    that only selects, reshapes or permutes elements (dropping a class token, ``reshape``,
    ``transpose``: all of pytorch-grad-cam's examples); any other is refused there with
    `LayerError`. Built by `read_transform`.
    """

    kind = "custom"

    def __init__(self, transform: ReshapeTransform, grid: tuple[int, int], channels: int) -> None:
        self.transform = transform
        self.grid = grid
        self.channels = channels
        self._index: torch.Tensor | None = None
        self._index_shape: tuple[int, ...] | None = None

    def describe(self) -> str:
        """One phrase, e.g. ``reshape_transform -> 768 channels, 7x7``."""
        return f"reshape_transform -> {self.channels} channels, {self.grid[0]}x{self.grid[1]}"

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        """The user's transform applied to the output (or its gradient)."""
        return self.transform(output)

    def _source_index(self, like: torch.Tensor) -> torch.Tensor:
        """For one sample: the flat index in the layer's layout of each map element."""
        shape = (1, *like.shape[1:])
        if self._index is None or self._index_shape != shape:
            count = int(torch.tensor(shape).prod())
            ids = torch.arange(count, dtype=torch.float64, device=like.device).reshape(shape)
            mapped = self.transform(ids).flatten()
            index = mapped.round().long()
            if (
                not torch.equal(index.double(), mapped)
                or len(index.unique()) != len(index)
                or int(index.min()) < 0
                or int(index.max()) >= count
            ):
                raise LayerError(
                    "reshape_transform does more than select/reorder elements, so modified maps "
                    "cannot be written back into the layer (needed by perturbation methods)"
                )
            self._index, self._index_shape = index, shape
        return self._index

    def from_map(self, feature_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) maps back in the layer's layout (``like``: one or B outputs).

        Raises:
            LayerError: the transform does more than select or reorder elements.
        """
        index = self._source_index(like)
        out = like.expand(len(feature_map), *like.shape[1:]).flatten(1).clone()
        out[:, index] = feature_map.flatten(1).to(out.dtype)
        return out.reshape(len(feature_map), *like.shape[1:])


def read_transform(transform: ReshapeTransform, example: torch.Tensor) -> CustomLayout:
    """The `CustomLayout` of ``transform`` applied to ``example`` (one output of the layer).

    Exceptions of the transform itself propagate.

    Raises:
        LayoutError: the transform does not return an (N, C, h, w) map of ``example``'s batch.
    """
    mapped = transform(example)
    if (
        not isinstance(mapped, torch.Tensor)
        or mapped.dim() != 4
        or mapped.shape[0] != example.shape[0]
    ):
        got = tuple(mapped.shape) if isinstance(mapped, torch.Tensor) else type(mapped).__name__
        raise LayoutError(f"reshape_transform returns {got}, not an (N, C, h, w) map")
    return CustomLayout(
        transform, (int(mapped.shape[2]), int(mapped.shape[3])), int(mapped.shape[1])
    )


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _stride_fits(grid: tuple[int, int], size: tuple[int, int]) -> bool:
    """True if ``grid`` is the image ``size`` divided by one integer stride (+- rounding).

    A convolution or patch embedding with stride s gives about H/s x W/s positions; padding,
    odd sizes and unpadded kernels change that by a cell or a few percent, never more.
    """
    (h, w), (height, width) = grid, size
    if h < 1 or w < 1 or h * w < 2 or h > height or w > width:
        return False
    guess = max(1, round(math.sqrt(height * width / (h * w))))
    for stride in range(max(1, guess - 1), guess + 2):
        if all(abs(n / stride - g) <= 1 + 0.05 * g for n, g in ((height, h), (width, w))):
            return True
    return False


def model_token_grid(
    model: nn.Module | None, size: tuple[int, int], tokens: int | None = None
) -> tuple[int, tuple[int, int]] | None:
    """(prefix tokens, (h, w) patch grid) the model declares for inputs of ``size``, or None.

    timm ViT/DeiT/BEiT/EVA: ``num_prefix_tokens`` and ``patch_embed.patch_size``;
    torchvision ViT: one class token and ``patch_size``; Hugging Face ``transformers`` vision
    models (inside any wrapper): their config and token parameters
    (`camscope.adapters.hf.hf_token_grids`; Swin: one grid per stage). ``tokens``: the token
    count of the output being read, which picks a stage; None where it is not one reading.
    """
    if model is None:
        return None
    readings = set(_declared_grids(model, size))
    if tokens is not None:
        readings = {(p, g) for p, g in readings if p + g[0] * g[1] == tokens}
    return readings.pop() if len(readings) == 1 else None


def _declared_grids(model: nn.Module, size: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None) if embed is not None else None
    prefix = getattr(model, "num_prefix_tokens", None)
    if patch is None and hasattr(model, "class_token") and hasattr(model, "image_size"):
        patch, prefix = getattr(model, "patch_size", None), 1  # torchvision VisionTransformer
    if patch is not None and prefix is not None:
        ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
        return [(int(prefix), (size[0] // int(ph), size[1] // int(pw)))]
    from camscope.adapters.hf import hf_token_grids  # a leaf: imports nothing of camscope

    return hf_token_grids(model, size)


def _token_grids(tokens: int, size: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
    """Every (prefix, grid) with prefix <= 2 and grid = the image cut into s x s patches."""
    height, width = size
    found = set()
    for prefix in range(3):
        n = tokens - prefix
        for s in range(1, min(height, width) + 1):
            for grid in ((height // s, width // s), (-(-height // s), -(-width // s))):
                if grid[0] * grid[1] == n and n >= 2:
                    found.add((prefix, grid))
    return sorted(found)


def _detect_tokens(shape: Shape, size: tuple[int, int], model: nn.Module | None) -> Layout:
    n_tokens, channels = int(shape[1]), int(shape[2])
    declared = model_token_grid(model, size, n_tokens)
    if declared is not None:
        prefix, grid = declared
        return Layout(TOKENS, grid, channels, prefix)
    candidates = _token_grids(n_tokens, size)
    if not candidates:
        raise LayoutError(
            f"{n_tokens} tokens are not 0-2 prefix tokens plus a patch grid that fits a "
            f"{size[0]}x{size[1]} input"
        )
    if len(candidates) > 1 or _token_grids(channels, size):
        readings = ", ".join(f"{p} prefix + {g[0]}x{g[1]}" for p, g in candidates)
        raise LayoutError(
            f"ambiguous token layout ({readings}"
            f"{'; the last axis could be tokens too' if _token_grids(channels, size) else ''})"
            "; pass reshape_transform"
        )
    prefix, grid = candidates[0]
    return Layout(TOKENS, grid, channels, prefix)


def _detect_map(
    shape: Shape, size: tuple[int, int], alt: tuple[Shape, tuple[int, int]] | None
) -> Layout:
    a, b, c = (int(v) for v in shape[1:])
    first, last = _stride_fits((b, c), size), _stride_fits((a, b), size)
    if first and last and alt is not None:  # spatial axes grow with the input, channels do not
        alt_shape, _alt_size = alt
        grows = [int(x) != int(y) for x, y in zip(shape[1:], alt_shape[1:], strict=True)]
        first, last = grows == [False, True, True], grows == [True, True, False]
    if first and not last:
        return Layout(CHANNELS_FIRST, (b, c), a)
    if last and not first:
        return Layout(CHANNELS_LAST, (a, b), c)
    if first and last:
        raise LayoutError(
            f"ambiguous: channels-first ({a} channels, {b}x{c}) or channels-last ({c} channels, "
            f"{a}x{b}); pass reshape_transform"
        )
    raise LayoutError(
        f"neither (N, C, h, w) nor (N, h, w, C) has a spatial grid that fits a "
        f"{size[0]}x{size[1]} input"
    )


def detect_layout(
    shape: Shape,
    size: tuple[int, int],
    model: nn.Module | None = None,
    *,
    batch: int = 1,
    alt: tuple[Shape, tuple[int, int]] | None = None,
) -> Layout:
    """The `Layout` of a layer output of ``shape`` for inputs of ``size`` (H, W).

    Args:
        shape: the layer's output shape for a batch of ``batch`` images.
        size: the input's (H, W).
        model: read for the patch grid and prefix tokens of token models (`model_token_grid`).
        batch: the input's batch size; an output with another first dimension (Swin's
            windows, attention heads folded into the batch) is refused.
        alt: ``(shape, size)`` of the same layer at another input size, which tells spatial
            axes (they grow) from channels (they do not) where the shape alone cannot.

    Raises:
        LayoutError: no reading, or more than one, fits.
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) < 3 or len(shape) > 4:
        raise LayoutError(f"{len(shape)}-D output; a map needs (N, C, h, w) or tokens (N, T, C)")
    if shape[0] != batch:
        raise LayoutError(f"first axis is {shape[0]}, not the batch ({batch} image(s))")
    if len(shape) == 3:
        return _detect_tokens(shape, size, model)
    return _detect_map(shape, size, alt)


def spatial_view(
    example_output: torch.Tensor,
    reshape_transform: ReshapeTransform | None = None,
    layout: MapLayout | None = None,
) -> MapLayout:
    """How ``example_output`` (one output of the target layer) reads as (N, C, h, w) and back.

    Args:
        example_output: one output of the target layer.
        reshape_transform: optional callable from the layer's output to (N, C, h, w); it takes
            precedence (`CustomLayout`, its inverse derived).
        layout: the layer's `Layout` as `camscope.layers.check_layer` found it.

    Raises:
        LayerError: the output is not a tensor, the transform returns no map of the batch, or
            neither a transform, a layout nor a 4-D output says how to read it.
    """
    if not isinstance(example_output, torch.Tensor):
        raise LayerError(
            f"the layer outputs a {type(example_output).__name__}, not a tensor; a CAM needs a "
            "spatial feature map (N, C, h, w)"
        )
    if reshape_transform is not None:
        try:
            return read_transform(reshape_transform, example_output)
        except LayoutError as exc:
            raise LayerError(f"output {tuple(example_output.shape)}; {exc}") from None
    if layout is not None:
        return layout
    if example_output.dim() == 4:  # already a map
        n, c, h, w = example_output.shape
        return Layout(CHANNELS_FIRST, (int(h), int(w)), int(c))
    raise LayerError(
        f"outputs shape {tuple(example_output.shape)}; a CAM needs a spatial feature map "
        "(N, C, h, w): choose a convolutional layer or pass reshape_transform="
    )
