"""Eigen CAMs: the first principal component of a layer's (weighted) activations.

Sign convention: a singular vector's sign is arbitrary. camscope orients the projection so
that it correlates positively with the channel mean of the projected tensor (the mean
activation map, for EigenCAM); pytorch-grad-cam keeps whatever sign the SVD solver returns,
so its map can be the negative of camscope's (compare with |r|). See `first_component`.
"""

from __future__ import annotations

import torch

from camscope.methods.base import BaseCAM, CAMContext
from camscope.methods.registry import register

__all__ = ["EigenCAM", "EigenGradCAM"]


@register(
    "eigencam",
    label="EigenCAM",
    family="eigen",
    paper="Muhammad & Yeasin, IJCNN 2020, https://arxiv.org/abs/2008.00299",
    cost="1 forward + 1 SVD per image (no gradients, class-agnostic)",
    aliases=("eigen-cam",),
)
class EigenCAM(BaseCAM):
    r"""EigenCAM (Muhammad & Yeasin, IJCNN 2020, https://arxiv.org/abs/2008.00299).

    With the layer's map reshaped to :math:`\tilde A \in \mathbb{R}^{hw \times C}` and centred
    over positions, :math:`\tilde A = U \Sigma V^\top`:

    .. math::
        L = \mathrm{ReLU}(\tilde A\, v_1) \text{ reshaped to } h \times w

    The map does not depend on the target class. Sign: see the module docstring.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> EigenCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    always_eigen = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        assert ctx.activations is not None
        return torch.ones(ctx.activations.shape[:2], dtype=ctx.activations.dtype,
                          device=ctx.activations.device)  # fmt: skip


@register(
    "eigengradcam",
    label="EigenGrad-CAM",
    family="eigen",
    paper="pytorch-grad-cam's EigenCAM (Muhammad & Yeasin, IJCNN 2020, "
    "https://arxiv.org/abs/2008.00299) of gradient x activation",
    cost="1 forward + 1 backward through the tail + 1 SVD per image",
    aliases=("eigengrad-cam", "eigen-grad-cam"),
)
class EigenGradCAM(BaseCAM):
    r"""EigenGrad-CAM: EigenCAM of :math:`g \odot A`, class-discriminative.

    pytorch-grad-cam's ``EigenGradCAM``; EigenCAM is Muhammad & Yeasin, IJCNN 2020,
    https://arxiv.org/abs/2008.00299.

    .. math::
        L = \mathrm{ReLU}\big(\mathrm{PC}_1(\tfrac{\partial y^c}{\partial A} \odot A)\big)

    class-discriminative through the gradient. Sign: see the module docstring.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> EigenGradCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    always_eigen = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx)
