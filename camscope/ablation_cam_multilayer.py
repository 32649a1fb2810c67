"""pytorch-grad-cam's module path ``ablation_cam_multilayer`` (its older AblationCAM module).

`AblationCAM` is camscope's (`camscope.methods.perturbation.AblationCAM`, which takes several
layers); `AblationLayer` here is that module's layer wrapper: it runs the wrapped layer and
ablates channel ``indices[i]`` of row i (min - 1e5 unless the minimum is 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from camscope.methods.ablation_layers import ablate_rows
from camscope.methods.perturbation import AblationCAM
from camscope.utils.find_layers import replace_layer_recursive

__all__ = ["AblationCAM", "AblationLayer", "replace_layer_recursive"]

OFFSET = 1e5  # that module's offset below the minimum


class AblationLayer(nn.Module):
    """Wraps ``layer``: its output with channel ``indices[i]`` of row i ablated.

    Args:
        layer: the wrapped layer.
        reshape_transform: if given, the output is channels-last (ViT tokens).
        indices: the channel to ablate in each row.
    """

    def __init__(
        self, layer: nn.Module, reshape_transform: Callable | None, indices: Sequence[int]
    ) -> None:
        super().__init__()
        self.layer = layer
        self.reshape_transform = reshape_transform
        self.indices = indices

    def forward(self, x: Any) -> torch.Tensor:  # noqa: D102
        output = self.layer(x)
        channels_last = output if self.reshape_transform is not None else output.transpose(1, -1)
        ablate_rows(channels_last, self.indices, OFFSET)
        return output
