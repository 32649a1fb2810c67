"""Read a layer's output as a spatial map ``(N, C, h, w)``, and write a map back in its layout.

Every CAM method works on ``(N, C, h, w)`` feature maps. `spatial_view` looks at one example
output of the target layer and returns a view with two functions:

* ``view.to_map(t)``: the layer's output (or its gradient) -> ``(N, C, h, w)``;
* ``view.from_map(m, like)``: a (modified) map -> the layer's own layout, ``like`` being an
  output of the layer (for values the map does not carry, e.g. a class token), so that the
  network after the layer can be re-run on it (AblationCAM).

The layout of a layer (channels-first, channels-last ``(N, h, w, C)``, ViT tokens
``(N, prefix + h*w, C)``) is decided by `camscope.models.check_layer` (`camscope.spatial`), whose
`Layout` is itself a view. Here: ``(N, C, h, w)`` outputs (pass-through) and a user
``reshape_transform`` (pytorch-grad-cam's argument: a callable from the layer's output to
``(N, C, h, w)``). The inverse of a user transform is derived, not asked for: the transform is
applied to a tensor holding each element's own index, which tells where every element of the
map came from; this works for every transform that only selects, reshapes or permutes
elements (dropping a class token, ``reshape``, ``transpose``: all of pytorch-grad-cam's
examples). Anything else is refused with `camscope.models.LayerError`.

Example::

    >>> import torch
    >>> view = spatial_view(torch.zeros(2, 8, 7, 7))
    >>> view.to_map(torch.ones(2, 8, 7, 7)).shape
    torch.Size([2, 8, 7, 7])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from camscope.models import LayerError

__all__ = ["SpatialView", "spatial_view"]

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


class SpatialView:
    """Identity view of a layer that already outputs ``(N, C, h, w)``."""

    description = "(N, C, h, w) feature map"

    def to_map(self, tensor: torch.Tensor) -> torch.Tensor:
        """The layer's output (or a gradient of it) as ``(N, C, h, w)``."""
        return tensor

    def from_map(self, maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` maps back in the layer's layout (``like``: one or B outputs)."""
        return maps


class _TransformView(SpatialView):
    """A user ``reshape_transform``; its inverse is found by transforming element indices."""

    description = "reshape_transform"

    def __init__(self, transform: ReshapeTransform, example: torch.Tensor) -> None:
        self.transform = transform
        self._index: torch.Tensor | None = None
        self._index_shape: tuple[int, ...] | None = None
        out = transform(example)
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LayerError(
                f"reshape_transform turned the layer's output {tuple(example.shape)} into {shape};"
                " it must return a (N, C, h, w) map"
            )

    def to_map(self, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.transform(tensor)

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

    def from_map(self, maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # noqa: D102
        index = self._source_index(like)
        out = like.expand(len(maps), *like.shape[1:]).flatten(1).clone()
        out[:, index] = maps.flatten(1).to(out.dtype)
        return out.reshape(len(maps), *like.shape[1:])


def spatial_view(
    example_output: torch.Tensor,
    reshape_transform: ReshapeTransform | None = None,
    layout: Any = None,
) -> Any:
    """A view that reads ``example_output``'s layout as ``(N, C, h, w)`` and back.

    Args:
        example_output: one output of the target layer.
        reshape_transform: optional callable from the layer's output to ``(N, C, h, w)``; it
            takes precedence (its inverse is derived, see the module docstring).
        layout: the layer's `camscope.spatial.Layout` as `camscope.models.check_layer` found
            it (channels-first, channels-last or tokens), used as the view.

    Raises:
        LayerError: the output is not a tensor, or neither a transform, a layout nor a 4-D
            output says how to read it.
    """
    if not isinstance(example_output, torch.Tensor):
        raise LayerError(
            f"the layer outputs a {type(example_output).__name__}, not a tensor; a CAM needs a "
            "spatial feature map (N, C, h, w)"
        )
    if reshape_transform is not None:
        return _TransformView(reshape_transform, example_output)
    if layout is not None:
        return layout
    if example_output.dim() == 4:
        return SpatialView()
    raise LayerError(
        f"outputs shape {tuple(example_output.shape)}; a CAM needs a spatial feature map "
        "(N, C, h, w): choose a convolutional layer or pass reshape_transform="
    )
