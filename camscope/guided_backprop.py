"""pytorch-grad-cam's module path: `camscope.methods.guided.GuidedBackpropReLUModel`.

`GuidedBackpropReLU` and `GuidedBackpropReLUasModule` are its building blocks, for code that
swaps ReLUs itself; camscope's guided methods guide ``nn.ReLU`` by call-scoped hooks instead.

Example::

    >>> import torch
    >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    >>> GuidedBackpropReLUasModule()(x).backward(torch.tensor([1.0, -1.0, 1.0]))
    >>> x.grad.tolist()
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from camscope.methods.guided import GuidedBackpropReLUModel

__all__ = ["GuidedBackpropReLU", "GuidedBackpropReLUModel", "GuidedBackpropReLUasModule"]


class GuidedBackpropReLU(torch.autograd.Function):
    """ReLU whose backward passes ``grad * [x > 0] * [grad > 0]`` (guided back-propagation)."""

    @staticmethod
    def forward(ctx: Any, input_img: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(input_img)
        return input_img.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (input_img,) = ctx.saved_tensors
        return grad_output.clamp_min(0) * (input_img > 0)


class GuidedBackpropReLUasModule(nn.Module):
    """`GuidedBackpropReLU` as a module."""

    def forward(self, input_img: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return GuidedBackpropReLU.apply(input_img)
