"""Gradient CAMs: weights from d(target score)/d(activations), through the network's tail.

Every method here gets its gradients from `BaseCAM.gradients` (one backward through the network
after the target layer, computed once per batch and layer) and supplies only its weights.
"""

from __future__ import annotations

import torch

from camscope.methods.base import BaseCAM, CAMContext
from camscope.methods.registry import register

__all__ = ["GradCAM"]


@register(
    "gradcam",
    label="Grad-CAM",
    family="gradient",
    paper="Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391",
    cost="1 forward + 1 backward through the tail",
    aliases=("grad-cam",),
)
class GradCAM(BaseCAM):
    r"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

    .. math::
        \alpha_k^c = \frac{1}{hw}\sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k \alpha_k^c A^k\Big)

    with :math:`y^c` the target score (the pre-softmax logit of class c by default).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> GradCAM(model, "layer4[-1]")(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 64, 64])
    """

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx).mean(dim=(2, 3))
