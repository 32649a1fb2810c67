"""Eigen CAMs: the first principal component of a layer's (weighted) activations.

Sign convention: a singular vector's sign is arbitrary. pytorch-grad-cam keeps whatever sign
its SVD solver returns; camscope's own choice (``eigen_sign="mean"``, the registry's and the
CLI's default: ``--eigen-sign``) orients the projection so that it correlates positively with
the channel mean of the projected tensor (the mean activation map, for EigenCAM). The classes
default to ``eigen_sign="pytorch-grad-cam"``, so code written for pytorch-grad-cam gets its
maps. See `camscope.methods.base.first_component`.
Seg-Eigen-CAM and KPCA-CAM orient their projection by the rule of Seg-Eigen-CAM's Eq. 13 (the
value of largest magnitude is positive), which is also scikit-learn's ``svd_flip`` rule that
pytorch-grad-cam's KPCA-CAM inherits: both give pytorch-grad-cam's maps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from camscope.methods.base import EIGEN_SIGNS, BaseCAM, CAMContext, first_component
from camscope.methods.registry import OptionSpec, register

__all__ = [
    "EIGEN_SIGN",
    "KPCA_CAM",
    "EigenCAM",
    "EigenGradCAM",
    "SegEigenCAM",
    "kernel_projection",
    "largest_magnitude_positive",
]

EIGEN_SIGN = OptionSpec(
    "eigen_sign", "--eigen-sign", EIGEN_SIGNS, "mean",
    "Orientation of the principal component: mean (positive correlation with the mean "
    "activation map) or pytorch-grad-cam (its SVD solver's sign).",
)  # fmt: skip


@register(
    "eigencam",
    label="EigenCAM",
    family="eigen",
    paper="Muhammad & Yeasin, IJCNN 2020, https://arxiv.org/abs/2008.00299",
    cost="1 forward + 1 SVD per image (no gradients, class-agnostic)",
    options=(EIGEN_SIGN,),
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
    uses_gradients = False

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
    options=(EIGEN_SIGN,),
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

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx)


def largest_magnitude_positive(projection: torch.Tensor) -> torch.Tensor:
    """Flip each (h, w) map of (N, h, w) whose most negative value outweighs its maximum.

    Seg-Eigen-CAM's sign correction (Chung & Ying 2025, Eq. 13): ``-p`` where
    ``|min p| > |max p|``.
    """
    flat = projection.flatten(1)
    flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
    return torch.where(flip[:, None, None], -projection, projection)


@register(
    "segeigencam",
    label="Seg-Eigen-CAM",
    family="eigen",
    paper="Chung & Ying, Applied Sciences 15(13) 7562, 2025, https://doi.org/10.3390/app15137562",
    cost="1 forward + 1 backward through the tail + 1 SVD per image",
    aliases=("seg-eigen-cam", "segeigen"),
)
class SegEigenCAM(BaseCAM):
    r"""Seg-Eigen-CAM (Chung & Ying 2025, https://doi.org/10.3390/app15137562).

    EigenCAM of the absolute gradient times the activations (Eq. 10), with the sign of the
    component fixed so that its value of largest magnitude is positive (Eq. 13):

    .. math::
        P = \mathrm{PC}_1\Big(\Big|\frac{\partial y^c}{\partial A}\Big| \odot A\Big),
        \qquad L = \mathrm{ReLU}\big(\operatorname{sign}(|\max P| - |\min P|)\, P\big)

    Made for segmentation models (pass a `SemanticSegmentationTarget`), usable on any model.
    ``eigen_smooth`` changes nothing: the map is always a projection.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> SegEigenCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx).abs()

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        weights = self.weights(ctx)
        assert ctx.activations is not None
        with torch.no_grad():
            projection = first_component(weights.double() * ctx.activations.double())
        return F.relu(largest_magnitude_positive(projection)), weights


KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def _kernel(x: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """scikit-learn's pairwise kernels (degree 3, coef0 1) of the rows of ``x`` (n, d)."""
    if kernel == "rbf":
        return torch.exp(-gamma * torch.cdist(x, x).pow(2))
    if kernel == "cosine":
        unit = x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return unit @ unit.T
    gram = x @ x.T
    if kernel == "sigmoid":
        return torch.tanh(gamma * gram + 1.0)
    if kernel == "poly":
        return (gamma * gram + 1.0) ** 3
    return gram


def kernel_projection(
    acts: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None
) -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w): the first kernel principal component of the positions.

    As scikit-learn's ``KernelPCA(n_components=1).fit_transform`` on the h*w positions (rows,
    centred over positions) of C features: the doubly-centred kernel matrix's top eigenvector
    times the square root of its eigenvalue (0 when that eigenvalue is not above rounding
    noise, e.g. for a constant layer), oriented
    so that its value of largest magnitude is positive. ``gamma`` defaults to 1 / C.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    flat = torch.nan_to_num(acts.double()).flatten(2).transpose(1, 2)  # (N, hw, C)
    flat = flat - flat.mean(dim=1, keepdim=True)
    g = 1.0 / flat.shape[-1] if gamma is None else float(gamma)
    out = []
    for x in flat:
        k = _kernel(x, kernel, g)
        noise = k.abs().max() * len(k) * torch.finfo(k.dtype).eps  # rounding, not variance
        k = k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()
        values, vectors = torch.linalg.eigh((k + k.T) / 2)
        top = torch.where(values[-1] > noise, values[-1], 0.0)
        out.append(vectors[:, -1] * top.sqrt())
    projection = torch.stack(out).reshape(acts.shape[0], *acts.shape[2:])
    return largest_magnitude_positive(projection)


@register(
    "kpcacam",
    label="KPCA-CAM",
    family="eigen",
    paper="Karmani et al., 2024, https://arxiv.org/abs/2410.00267",
    cost="1 forward + 1 (h*w)^2 kernel eigendecomposition per image (no gradients)",
    options=(
        OptionSpec("kernel", "--kpca-kernel", KERNELS, "sigmoid", "KPCA-CAM: the kernel."),
        OptionSpec(
            "gamma", "--kpca-gamma", float, None,
            "KPCA-CAM: the kernel's gamma (default 1 / channels).", minimum=0,
        ),
    ),
    aliases=("kpca-cam", "kpca_cam"),
)  # fmt: skip
class KPCA_CAM(BaseCAM):  # noqa: N801 - pytorch-grad-cam's name
    r"""KPCA-CAM (Karmani et al., 2024, https://arxiv.org/abs/2410.00267).

    EigenCAM with kernel PCA: the h*w positions of the layer's map, centred, are samples of C
    features; with the centred kernel matrix :math:`\tilde K = \lambda_1 v_1 v_1^\top +
    \dots`,

    .. math::
        L = \mathrm{ReLU}\big(\sqrt{\lambda_1}\, v_1\big) \text{ reshaped to } h \times w

    (`kernel_projection`; kernels as scikit-learn's, default sigmoid
    :math:`\tanh(\gamma\, x^\top y + 1)`, :math:`\gamma = 1/C`). Class-agnostic;
    ``eigen_smooth`` changes nothing. Computed in float64 with ``torch.linalg.eigh`` (pytorch-
    grad-cam calls scikit-learn, whose sign rule this keeps).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> KPCA_CAM(model, "layer4[-1]", kernel="rbf")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        kernel: str = "sigmoid",
        gamma: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        self.kernel, self.gamma = kernel, gamma

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        acts = ctx.activations
        assert acts is not None
        with torch.no_grad():
            raw = kernel_projection(acts, self.kernel, self.gamma)
        return F.relu(raw), acts.new_ones(acts.shape[:2])
