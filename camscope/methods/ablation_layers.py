"""pytorch-grad-cam's ablation layers: how `AblationCAM` ablates when given ``ablation_layer=``.

An ablation layer follows pytorch-grad-cam's protocol: ``activations_to_be_ablated`` picks the
channels (and sets ``indices``, the ablation order), ``set_next_batch`` stores copies of one
image's layer output, and calling the layer returns those copies with the next channels of
``indices`` ablated, row by row. camscope runs the result through the network after the layer
(`camscope.layers.split`) instead of swapping the layer into the model, so a user's own
subclass works unchanged. The value written is pytorch-grad-cam's: 0 when the batch's
minimum is 0, else the running minimum minus 1e7, row after row (row j of a batch gets
``min - (j + 1) * 1e7``).

Example::

    >>> import torch
    >>> layer = AblationLayer()
    >>> acts = torch.rand(1, 3, 2, 2)
    >>> layer.activations_to_be_ablated(acts[0].numpy()).tolist()
    [0, 1, 2]
    >>> layer.set_next_batch(input_batch_index=0, activations=acts, num_channels_to_ablate=2)
    >>> out = layer(None)
    >>> bool(out[0, 0].max() < -1e6), bool(out[1, 1].max() < -1e6), bool(out[0, 1].min() >= 0)
    (True, True, True)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ABLATION_VALUE",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "ablate_rows",
]

ABLATION_VALUE = 1e7  # pytorch-grad-cam's offset below the minimum
FASTER_RCNN_VALUE = -1000.0  # pytorch-grad-cam's AblationLayerFasterRCNN value
FPN_LEVELS = ("0", "1", "2", "3", "pool")  # torchvision's FPN outputs, 256 channels each


class AblationLayer(nn.Module):
    """Ablates channels of a channels-first (N, C, h, w) layer output (pytorch-grad-cam's)."""

    channel_dim = 1

    def __init__(self) -> None:
        super().__init__()
        self.indices: np.ndarray = np.zeros(0, dtype=np.int32)
        self.activations: Any = None

    def objectiveness_mask_from_svd(self, activations: np.ndarray, threshold: float = 0.01):
        """(h, w) bool: where |first principal component| (min-max) exceeds ``threshold``."""
        from camscope.methods.base import first_component

        stacked = torch.as_tensor(np.asarray(activations, dtype=np.float32))[None]
        projection = np.abs(first_component(stacked, "pytorch-grad-cam")[0].numpy())
        projection = projection - projection.min()
        projection = projection / projection.max()
        return projection > threshold

    def activations_to_be_ablated(
        self, activations: np.ndarray, ratio_channels_to_ablate: float = 1.0
    ) -> np.ndarray:
        """The channels to ablate, in order; all of them when the ratio is 1 (sets ``indices``).

        Below 1 (pytorch-grad-cam's experiment): channels scored by the share of their
        |activation| (min-max) inside `objectiveness_mask_from_svd`; the top ``ratio`` then
        the bottom ``ratio`` of them.
        """
        channels = len(activations)
        if ratio_channels_to_ablate == 1.0:
            self.indices = np.arange(channels, dtype=np.int32)
            return self.indices
        mask = self.objectiveness_mask_from_svd(activations)
        magnitude = np.abs(np.asarray(activations, dtype=np.float32)).reshape(channels, -1)
        magnitude = magnitude - magnitude.min(axis=1, keepdims=True)
        magnitude = magnitude / magnitude.max(axis=1, keepdims=True)
        scores = (mask.reshape(1, -1) * magnitude).sum(axis=1) / magnitude.sum(axis=1)
        order = np.argsort(np.float32(scores))
        keep = int(channels * ratio_channels_to_ablate)
        self.indices = np.int32(list(order[::-1][:keep]) + list(order[:keep]))
        return self.indices

    def set_next_batch(
        self, input_batch_index: int, activations: torch.Tensor, num_channels_to_ablate: int
    ) -> None:
        """Store ``num_channels_to_ablate`` copies of image ``input_batch_index``'s output."""
        one = activations[input_batch_index : input_batch_index + 1].clone()
        self.activations = one.repeat(num_channels_to_ablate, *([1] * (one.dim() - 1)))

    def __call__(self, x: Any = None) -> torch.Tensor:  # noqa: D102 - see the class docstring
        output = self.activations
        ablate_rows(output.transpose(self.channel_dim, -1), self.indices)
        return output


class AblationLayerVit(AblationLayer):
    """Ablates channels of a ViT's token output (N, tokens, C), class token included."""

    channel_dim = -1


class AblationLayerFasterRCNN(AblationLayer):
    """Ablates channels of torchvision's FPN output (5 levels of 256 channels, a dict)."""

    def set_next_batch(
        self, input_batch_index: int, activations: Any, num_channels_to_ablate: int
    ) -> None:
        """Copies of image ``input_batch_index``'s output at every FPN level."""
        self.activations = OrderedDict(
            (key, value[input_batch_index : input_batch_index + 1].clone().repeat(
                num_channels_to_ablate, 1, 1, 1))
            for key, value in activations.items()
        )  # fmt: skip

    def __call__(self, x: Any = None) -> Any:  # noqa: D102
        result = self.activations
        for row in range(result["pool"].size(0)):
            level, channel = divmod(int(self.indices[row]), 256)
            result[FPN_LEVELS[level]][row, channel] = FASTER_RCNN_VALUE
        return result


def ablate_rows(channels_last: torch.Tensor, indices: Any, offset: float = ABLATION_VALUE) -> None:
    """Row i: channel ``indices[i]`` (last dim) set to pytorch-grad-cam's value, in place.

    The value is 0 if the tensor's minimum is 0, else its current minimum minus ``offset``
    (so that it falls row after row).
    """
    for row in range(channels_last.size(0)):
        low = channels_last.min()
        value = 0 if bool(low == 0) else low - offset
        channels_last[row, ..., int(indices[row])] = value
