"""pytorch-grad-cam's ``utils.reshape_transforms``: token and FPN outputs as (N, C, h, w) maps.

camscope finds the layout of ViT and Swin outputs by itself (`camscope.layers.layout`); these
functions are for code that passes ``reshape_transform=`` as pytorch-grad-cam's README does.

Example::

    >>> import torch
    >>> vit_reshape_transform(torch.zeros(2, 1 + 4 * 4, 8), height=4, width=4).shape
    torch.Size([2, 8, 4, 4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def fasterrcnn_reshape_transform(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """An FPN's outputs (a dict of maps): |map| resized to the ``"pool"`` level, concatenated."""
    size = x["pool"].shape[-2:]
    maps = [F.interpolate(value.abs(), size, mode="bilinear") for value in x.values()]
    return torch.cat(maps, dim=1)


def swinT_reshape_transform(tensor: torch.Tensor, height: int = 7, width: int = 7) -> torch.Tensor:  # noqa: N802
    """(N, h*w, C) or (N, h, w, C) Swin tokens -> (N, C, h, w)."""
    return tensor.reshape(tensor.size(0), height, width, tensor.size(-1)).permute(0, 3, 1, 2)


def vit_reshape_transform(tensor: torch.Tensor, height: int = 14, width: int = 14) -> torch.Tensor:
    """(N, 1 + h*w, C) ViT tokens (class token first, dropped) -> (N, C, h, w)."""
    grid = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return grid.permute(0, 3, 1, 2)
