"""Gradient CAMs: weights from d(target score)/d(activations), through the network's tail.

Every method here gets its gradients from `BaseCAM.gradients` (one backward through the network
after the target layer, computed once per batch and layer) and supplies only its weights.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camscope.methods.base import BaseCAM, CAMContext
from camscope.methods.registry import OptionSpec, register
from camscope.methods.targets import FinerWeightedTarget, Targets, TargetSet

__all__ = [
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ShapleyCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
]


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

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx).mean(dim=(2, 3))


@register(
    "gradcampp",
    label="Grad-CAM++",
    family="gradient",
    paper="Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063",
    cost="1 forward + 1 backward through the tail",
    aliases=("gradcam++", "grad-cam++", "gradcamplusplus"),
)
class GradCAMPlusPlus(BaseCAM):
    r"""Grad-CAM++ (Chattopadhyay et al., WACV 2018, https://arxiv.org/abs/1710.11063).

    With :math:`g = \partial y^c / \partial A` and the exponential-score closed form of the
    higher derivatives (the paper's eq. 19, as pytorch-grad-cam computes it):

    .. math::
        \alpha^{kc}_{ij} = \frac{g_{ij}^2}{2 g_{ij}^2 + \sum_{a,b} A^k_{ab}\, g_{ij}^3 + 10^{-6}}
        \;(0 \text{ where } g_{ij} = 0), \qquad
        w_k^c = \sum_{i,j} \alpha^{kc}_{ij}\, \mathrm{ReLU}(g_{ij}), \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> GradCAMPlusPlus(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    eps = 1e-6

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        assert ctx.activations is not None
        return plusplus_weights(self.gradients(ctx), ctx.activations, self.eps)


def plusplus_weights(
    grads: torch.Tensor, acts: torch.Tensor, eps: float, first: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM++ channel weights from gradients (N, C, h, w) and activations.

    ``first`` (default ``grads``) is the first derivative that the ReLU is applied to.
    """
    g2 = grads.pow(2)
    sum_a = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g2 * grads + eps)
    alpha = torch.where(grads != 0, alpha, 0.0)
    return (alpha * torch.relu(grads if first is None else first)).sum(dim=(2, 3))


@register(
    "xgradcam",
    label="XGrad-CAM",
    family="gradient",
    paper="Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312",
    cost="1 forward + 1 backward through the tail",
    aliases=("xgrad-cam",),
)
class XGradCAM(BaseCAM):
    r"""XGrad-CAM (Fu et al., BMVC 2020, https://arxiv.org/abs/2008.02312).

    .. math::
        w_k^c = \sum_{i,j} \frac{A^k_{ij}}{\sum_{a,b} A^k_{ab} + 10^{-7}}
        \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    (the ``1e-7`` as pytorch-grad-cam).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> XGradCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    eps = 1e-7

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts = ctx.activations
        assert acts is not None
        sum_a = acts.sum(dim=(2, 3), keepdim=True)
        return (self.gradients(ctx) * acts / (sum_a + self.eps)).sum(dim=(2, 3))


@register(
    "hirescam",
    label="HiResCAM",
    family="gradient",
    paper="Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891",
    cost="1 forward + 1 backward through the tail",
    aliases=("hires-cam",),
)
class HiResCAM(BaseCAM):
    r"""HiResCAM (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891).

    Element-wise gradient times activation, summed over channels:

    .. math::
        L^c_{ij} = \mathrm{ReLU}\Big(\sum_k \frac{\partial y^c}{\partial A^k_{ij}} A^k_{ij}\Big)

    For a network that ends in global average pooling and a linear layer this is Grad-CAM.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> HiResCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return self.gradients(ctx)


@register(
    "gradcam-elementwise",
    label="Grad-CAM element-wise",
    family="gradient",
    paper="pytorch-grad-cam's variant of HiResCAM (Draelos & Carin, 2020, "
    "https://arxiv.org/abs/2011.08891) with a ReLU per element",
    cost="1 forward + 1 backward through the tail",
    aliases=("gradcamelementwise",),
)
class GradCAMElementWise(BaseCAM):
    r"""Grad-CAM element-wise: HiResCAM with a ReLU on each element-wise product.

    pytorch-grad-cam's ``GradCAMElementWise``, a variant of HiResCAM (Draelos & Carin, 2020,
    https://arxiv.org/abs/2011.08891).

    .. math::
        L^c_{ij} = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\Big(
        \frac{\partial y^c}{\partial A^k_{ij}} A^k_{ij}\Big)\Big)

    As element-wise weights: :math:`w^k_{ij} = g^k_{ij}` where :math:`g^k_{ij} A^k_{ij} > 0`,
    else 0 (so that ``w * A`` is the ReLU'd product, also under ``eigen_smooth``).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> GradCAMElementWise(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        grads = self.gradients(ctx)
        return torch.where(grads * ctx.activations > 0, grads, 0.0)  # type: ignore[operator]


@register(
    "layercam",
    label="LayerCAM",
    family="gradient",
    paper="Jiang et al., IEEE TIP 2021, https://doi.org/10.1109/TIP.2021.3089943",
    cost="1 forward + 1 backward through the tail",
    aliases=("layer-cam",),
)
class LayerCAM(BaseCAM):
    r"""LayerCAM (Jiang et al., IEEE TIP 2021, https://doi.org/10.1109/TIP.2021.3089943).

    .. math::
        L^c_{ij} = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\Big(
        \frac{\partial y^c}{\partial A^k_{ij}}\Big) A^k_{ij}\Big)

    Several layers are fused as for every method (normalised maps, averaged); the paper's
    ``tanh`` scaling of shallow layers is not applied (as pytorch-grad-cam).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> LayerCAM(model, ["layer3", "layer4"])(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return torch.relu(self.gradients(ctx))


SEED = OptionSpec("seed", "--seed", int, 0, "Seed of the method's random draws (noise, masks).")


def seeded_normal(shape: tuple[int, ...], seed: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``shape`` from a CPU generator seeded with ``seed``.

    Drawn on the CPU so that the numbers do not depend on the device, then moved to ``like``'s.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(like)


@register(
    "smoothgradcampp",
    label="Smooth Grad-CAM++",
    family="gradient",
    paper="Omeiza et al., 2019, https://arxiv.org/abs/1908.01224",
    cost="S forwards + S backwards through the tail (S = --smooth-samples, default 4)",
    options=(
        OptionSpec(
            "num_samples", "--smooth-samples", int, 4,
            "Smooth Grad-CAM++: noisy copies of each image (cost: one backward each).",
            minimum=1,
        ),
        OptionSpec(
            "std", "--smooth-std", float, 0.3,
            "Smooth Grad-CAM++: standard deviation of the noise added to the normalised input.",
            minimum=0,
        ),
        SEED,
    ),
    aliases=("smoothgradcam++", "smooth-grad-cam++"),
)  # fmt: skip
class SmoothGradCAMPlusPlus(BaseCAM):
    r"""Smooth Grad-CAM++ (Omeiza et al., 2019, https://arxiv.org/abs/1908.01224), as torch-cam.

    Gradients :math:`g^{(s)}` are taken at S noisy copies :math:`x + \mathcal{N}(0,\sigma^2)`
    of the input and averaged (:math:`\bar g^{p} = \frac1S \sum_s (g^{(s)})^p`); with the
    activations A of the clean input:

    .. math::
        \alpha^{kc}_{ij} = \frac{\bar g^2_{ij}}{2\bar g^2_{ij} +
        \sum_{a,b} A^k_{ab}\,\bar g^3_{ab} + 10^{-8}}, \qquad
        w_k^c = \sum_{i,j} \alpha^{kc}_{ij}\, \mathrm{ReLU}(\bar g^1_{ij}), \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    The denominator and the numerator's :math:`\bar g^2` are torch-cam's (its "personal
    correction to the paper"). torch-cam multiplies alpha by the ReLU of the *last* noisy
    sample's gradient; camscope uses the mean gradient :math:`\bar g^1`, the SmoothGrad
    estimate the paper describes. The noise is seeded (``seed``) and drawn per image, so a
    batch gives the maps of its images explained one at a time.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> SmoothGradCAMPlusPlus(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    eps = 1e-8

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        num_samples: int = 4,
        std: float = 0.3,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        self.num_samples, self.std, self.seed = num_samples, std, seed

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts = ctx.activations
        assert acts is not None and ctx.layer is not None
        index = self.layers.index(ctx.layer)
        x = ctx.inputs
        noise = seeded_normal((self.num_samples, 1, *x.shape[1:]), self.seed, x) * self.std
        g1 = g2 = g3 = torch.zeros_like(acts)
        for s in range(self.num_samples):
            grads = self.gradients(self.context(x + noise[s], index, ctx.targets))
            g1, g2, g3 = g1 + grads, g2 + grads.pow(2), g3 + grads.pow(3)
        g1, g2, g3 = (g / self.num_samples for g in (g1, g2, g3))
        denominator = 2 * g2 + (g3 * acts).sum(dim=(2, 3), keepdim=True) + self.eps
        ctx.info["noisy_samples"] = float(self.num_samples * len(x))
        return (g2 / denominator * torch.relu(g1)).sum(dim=(2, 3))


@register(
    "fullgrad",
    label="FullGrad",
    family="gradient",
    paper="Srinivas & Fleuret, NeurIPS 2019, https://arxiv.org/abs/1905.00780",
    cost="1 forward + 1 backward through the whole network (every bias layer is read)",
    aliases=("full-grad",),
)
class FullGrad(BaseCAM):
    r"""FullGrad (Srinivas & Fleuret, NeurIPS 2019, https://arxiv.org/abs/1905.00780).

    Model-wide, as pytorch-grad-cam computes it: with :math:`\psi` = per-channel min-max
    normalisation (``(v - min) / (max - min + 1e-7)``) then bilinear resize to the input size,

    .. math::
        S^c = \sum_{\text{channels}} \psi\big(|x \odot \nabla_x y^c|\big) + \sum_{l}
        \sum_{\text{channels}} \psi\big(|b_l \odot \nabla_{z_l} y^c|\big)

    over every ``Conv2d`` and ``BatchNorm2d`` with a bias :math:`b_l` (a BatchNorm's effective
    bias is :math:`\beta - \mu\gamma/\sqrt{\sigma^2+\epsilon}`) and its output :math:`z_l`.
    The target layers are ignored (noted in ``cam.notes``), ``eigen_smooth`` too (warned).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> FullGrad(model)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    needs_layer = False
    compute_input_gradient = True
    eps = 1e-7

    def __init__(
        self, model: torch.nn.Module, target_layers: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(model, None, *args, **kwargs)
        if target_layers is not None:
            self.notes.append("FullGrad reads every bias layer; the target layer is ignored")
        self.bias_layers = [
            m
            for m in model.modules()
            if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None
        ]

    @staticmethod
    def _bias(layer: nn.Module) -> torch.Tensor:
        if isinstance(layer, nn.BatchNorm2d):
            assert layer.running_mean is not None and layer.running_var is not None
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            return (layer.bias - layer.running_mean * scale).detach()
        return layer.bias.detach()  # type: ignore[union-attr]

    def _scaled_sum(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, C, h, w) -> (N, H, W): per-channel min-max, resize, sum over channels.

        Resizing is linear, so the channels are summed first and resized once.
        """
        low = t.amin(dim=(2, 3), keepdim=True)
        t = t - low
        t = (t / (t.amax(dim=(2, 3), keepdim=True) + self.eps)).sum(dim=1, keepdim=True)
        if tuple(t.shape[-2:]) != size:
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        return t[:, 0]

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        if eigen:
            warnings.warn("FullGrad ignores eigen_smooth", stacklevel=3)
        outputs: list[tuple[nn.Module, torch.Tensor]] = []

        def keep(module: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
            outputs.append((module, out))
            return out.clone()  # later in-place ops change the copy, not what we differentiate

        x = ctx.inputs.clone().requires_grad_(True)
        handles = [m.register_forward_hook(keep) for m in self.bias_layers]
        try:
            with torch.enable_grad():
                score = ctx.targets.scores(self.adapt(self.model(x))).sum()
                tensors = [x, *(o for _, o in outputs)]
                grads = torch.autograd.grad(score, tensors, allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        size = tuple(x.shape[-2:])
        with torch.no_grad():
            total = self._scaled_sum((grads[0] * x).abs(), size)  # type: ignore[arg-type]
            for (module, out), grad in zip(outputs, grads[1:], strict=True):
                grad = torch.zeros_like(out) if grad is None else grad
                bias = self._bias(module).to(grad)[None, :, None, None]
                total = total + self._scaled_sum((bias * grad).abs(), size)  # type: ignore[arg-type]
        ctx.info["bias_layers"] = float(len(outputs))
        return total, torch.zeros(len(x), 0, device=x.device)


@register(
    "shapleycam",
    label="ShapleyCAM",
    family="gradient",
    paper="Cai, 2025 (CAMs as Shapley value-based explainers), https://arxiv.org/abs/2501.06261",
    cost="1 forward + 1 backward + 1 Hessian-vector product (double backward) through the tail",
    aliases=("shapley-cam",),
)
class ShapleyCAM(BaseCAM):
    r"""ShapleyCAM (Cai, 2025, https://arxiv.org/abs/2501.06261).

    The second-order Taylor estimate of each channel's Shapley value: with
    :math:`g = \partial y^c / \partial A` and the Hessian-vector product
    :math:`H A = \partial (g \cdot A) / \partial A` (A held fixed as the vector),

    .. math::
        w_k^c = \frac{1}{hw}\sum_{i,j} \big(g - \tfrac12 H A\big)^k_{ij}, \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    Both derivatives are taken through the network after the layer. Where the network after
    the layer is piecewise linear in A (ReLU, pooling, linear layers and a logit target),
    :math:`H A = 0` and this is Grad-CAM; the paper pairs it with a non-linear target such
    as `ClassifierOutputReST`.

    Example::

        >>> import torch, torchvision
        >>> from camscope.methods import ClassifierOutputReST
        >>> model = torchvision.models.resnet18().eval()
        >>> cam = ShapleyCAM(model, "layer4[-1]")
        >>> cam(torch.randn(1, 3, 64, 64), [ClassifierOutputReST(3)]).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        grads, hvp = self.gradient_and_hvp(ctx)
        return (grads - 0.5 * hvp).mean(dim=(2, 3))

    def gradient_and_hvp(self, ctx: CAMContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(g, H A) as maps (N, C, h, w), through the network after the layer."""
        assert ctx.view is not None
        with torch.enable_grad():
            score, leaf = self.target_score(ctx)
            (grads,) = torch.autograd.grad(score, leaf, create_graph=True)
            hvp = None
            if grads.requires_grad:
                (hvp,) = torch.autograd.grad(
                    grads, leaf, grad_outputs=leaf.detach(), allow_unused=True
                )
        grads = grads.detach()
        ctx.grads = ctx.view.to_map(grads)
        hvp = torch.zeros_like(grads) if hvp is None else hvp
        return ctx.grads, ctx.view.to_map(hvp)


FINER_ALPHA = OptionSpec(
    "alpha", "--finer-alpha", float, 1.0,
    "Finer-CAM: how strongly the similar classes' logits are subtracted (0 = the base method).",
    minimum=0,
)  # fmt: skip


@register(
    "finercam",
    label="Finer-CAM",
    family="gradient",
    paper="Zhang et al., CVPR 2025, https://arxiv.org/abs/2501.11309",
    cost="1 forward + 1 backward through the tail (as its base method, Grad-CAM)",
    options=(FINER_ALPHA,),
    aliases=("finer-cam",),
)
class FinerCAM(BaseCAM):
    r"""Finer-CAM (Zhang et al., CVPR 2025, https://arxiv.org/abs/2501.11309).

    The base method (Grad-CAM by default) explains the target against the classes most similar
    to it: the ``comparison_categories`` positions (default 1, 2, 3) of the classes sorted by
    :math:`|y_j - s|`, the distance of their logit to the target's score :math:`s` (the logit
    of the target class, so position 0 is the target itself), through `FinerWeightedTarget`:

    .. math::
        s' = \frac{\sum_j p_j\,(s - \alpha\, y_j)}{\sum_j p_j + 10^{-9}},
        \qquad p = \mathrm{softmax}(y)

    ``alpha = 0`` gives the base method. As pytorch-grad-cam's ``FinerCAM`` with
    ``targets=None``; pytorch-grad-cam uses targets given explicitly as they are, camscope makes
    any target (index or callable) the main score of a finer target, except a
    `FinerWeightedTarget`, used as it is. ``alpha``, ``comparison_categories`` and
    ``target_idx`` may also be given per call, as pytorch-grad-cam's ``forward`` takes them.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> FinerCAM(model, "layer4[-1]", alpha=0.6)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        base_method: type[BaseCAM] = GradCAM,
        *,
        alpha: float = 1.0,
        comparison_categories: Any = (1, 2, 3),
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.base = base_method(model, target_layers, reshape_transform, **kwargs)
        self.alpha = float(alpha)
        self.comparison_categories = tuple(int(c) for c in comparison_categories)

    def __call__(  # type: ignore[override]
        self,
        input_tensor: torch.Tensor,
        targets: Targets = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        *,
        alpha: float | None = None,
        comparison_categories: Any = None,
        target_idx: int | None = None,
    ) -> torch.Tensor:
        """Maps (N, H, W); ``alpha`` / ``comparison_categories`` override the object's here."""
        saved = self.alpha, self.comparison_categories
        if alpha is not None:
            self.alpha = float(alpha)
        if comparison_categories is not None:
            self.comparison_categories = tuple(int(c) for c in comparison_categories)
        if targets is None and target_idx is not None:
            targets = int(target_idx)
        try:
            return self.explain(input_tensor, targets, aug_smooth, eigen_smooth).maps
        finally:
            self.alpha, self.comparison_categories = saved

    @property
    def layer_gradients(self) -> bool:  # type: ignore[override]  # noqa: D102
        return self.base._keeps_graph()  # the base method's maps are drawn on our contexts

    def close(self) -> None:  # noqa: D102
        super().close()
        self.base.close()

    def context(  # noqa: D102
        self, inputs: torch.Tensor, index: int | None, targets: Targets | TargetSet
    ) -> CAMContext:
        ctx = super().context(inputs, index, targets)
        ctx.targets = self.finer_targets(ctx.targets, ctx.logits)
        return ctx

    def finer_targets(self, targets: TargetSet, logits: torch.Tensor) -> TargetSet:
        """Each image's target against its most similar classes (already finer: unchanged)."""
        functions = targets.functions
        if functions is not None and all(isinstance(f, FinerWeightedTarget) for f in functions):
            return targets
        mains = functions or [int(c) for c in targets.indices]
        finer = []
        with torch.no_grad():
            for main, row in zip(mains, logits, strict=True):
                score = row[main] if isinstance(main, int) else main(row)
                order = torch.argsort((row - score).abs(), stable=True).tolist()
                others = [order[p] for p in self.comparison_categories if p < len(order)]
                finer.append(FinerWeightedTarget(main, others, self.alpha))
        return TargetSet(targets.indices, tuple(finer))

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        return self.base.layer_map(ctx, eigen or self.base.always_eigen)
