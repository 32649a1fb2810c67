"""Activation CAMs: weights from statistics of the layer's own activations.

No gradient and no extra pass: one forward to the layer (and through the network for the
logits), then a weighted sum of the channels. Class-agnostic.
"""

from __future__ import annotations

from typing import Any

import torch

from camscope.methods.base import BaseCAM, CAMContext
from camscope.methods.registry import OptionSpec, register

__all__ = ["FEM"]


@register(
    "fem",
    label="FEM",
    family="activation",
    paper="Fuad et al., IPTA 2020 (Feature Explanation Method), "
    "https://hal.science/hal-02963298/document",
    cost="1 forward (no gradients, class-agnostic)",
    options=(
        OptionSpec(
            "k", "--fem-k", float, 2.0,
            "FEM: the k of the k-sigma threshold (channel mean + k standard deviations).",
            minimum=0,
        ),
    ),
    aliases=("feature-explanation-method",),
)  # fmt: skip
class FEM(BaseCAM):
    r"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020, gradient-free).

    Paper: https://hal.science/hal-02963298/document. Each channel's positions are tested
    against its k-sigma threshold (mean and population standard deviation over positions);
    a channel's weight is the share of its positions above the threshold:

    .. math::
        w_k = \frac{1}{hw} \sum_{i,j} \big[A^k_{ij} > \mu_k + k\,\sigma_k\big], \qquad
        L = \mathrm{ReLU}\Big(\sum_k w_k A^k\Big)

    As pytorch-grad-cam's ``FEM`` (``k=2``). The map does not depend on the target class.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> FEM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        k: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.k = float(k)

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts = ctx.activations
        assert acts is not None
        mean = acts.mean(dim=(2, 3), keepdim=True)
        std = acts.std(dim=(2, 3), keepdim=True, correction=0)
        return (acts > mean + self.k * std).to(acts.dtype).mean(dim=(2, 3))
