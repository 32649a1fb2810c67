"""Guided back-propagation and Guided Grad-CAM: maps at the input's resolution.

Guided back-propagation (Springenberg et al., ICLR-W 2015) takes the gradient of the target
score with respect to the input, with every ``nn.ReLU`` of the model passing back only positive
gradients. camscope guides the ReLUs through forward hooks that live only for the call (the
model's modules are never replaced, so an ``inplace`` ReLU stays one); ReLUs called as
functions (``F.relu``) and other activations (``ReLU6``, GELU) are not guided, as in
pytorch-grad-cam, and a model without any ``nn.ReLU`` is said in ``cam.notes`` and logged.

`GuidedBackpropReLUModel` is pytorch-grad-cam's class of the same name (an (H, W, 3) gradient
for one image); `GuidedBackprop` and `GuidedGradCAM` are the registered methods, whose map is
one channel: the largest absolute value over the colour channels (Simonyan et al., 2014).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from camscope.methods.base import BaseCAM, CAMContext, normalise_maps
from camscope.methods.gradient import GradCAM
from camscope.methods.registry import register
from camscope.methods.targets import TargetSet

__all__ = ["GuidedBackprop", "GuidedBackpropReLUModel", "GuidedGradCAM", "guided_gradients"]

log = logging.getLogger("camscope")


class _PositiveGrad(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad.clamp_min(0)


def _guide(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
    # ReLU's own backward masks by (input > 0); with the positive part of the incoming
    # gradient this is guided back-propagation: grad * [x > 0] * [grad > 0]
    return _PositiveGrad.apply(output)


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[int]:
    """Guide every ``nn.ReLU`` of ``model`` while inside; yields how many there are."""
    handles = [m.register_forward_hook(_guide) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def guided_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    score: Callable[[Any], torch.Tensor],
) -> tuple[torch.Tensor, int]:
    """Guided back-propagation: d score(model(x)).sum() / dx with guided ReLUs, (N, C, H, W).

    Returns the gradient and the number of guided ReLU modules.
    """
    x = inputs.detach().clone().requires_grad_(True)
    with guided_relus(model) as count, torch.enable_grad():
        total = score(model(x)).sum()
        (grad,) = torch.autograd.grad(total, x)
    return grad.detach(), count


def colour_max(grad: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W): the largest absolute value over the colour channels."""
    return grad.abs().amax(dim=1)


class GuidedBackpropReLUModel:
    """pytorch-grad-cam's guided back-propagation wrapper (Springenberg et al., 2015).

    ``GuidedBackpropReLUModel(model, device)(input_img, target_category=None)`` returns the
    guided gradient of image 0's ``target_category`` logit (default: its top-1 class) with
    respect to the input, as a float NumPy array (H, W, C). Paper:
    https://arxiv.org/abs/1412.6806. Unlike pytorch-grad-cam, the model is not modified: the
    ReLUs are guided by hooks for the call (pytorch-grad-cam swaps them for new, non-inplace
    ``nn.ReLU`` modules afterwards), the gradient does not accumulate in ``input_img.grad``,
    and the model runs in eval mode with the caller's mode restored after.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18()
        >>> GuidedBackpropReLUModel(model)(torch.randn(1, 3, 64, 64)).shape
        (64, 64, 3)
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None) -> None:
        self.model = model
        if device is None:
            self.device = next(model.parameters()).device
        else:
            self.device = torch.device(device)
            self.model = model.to(self.device)

    def forward(self, input_img: torch.Tensor) -> torch.Tensor:
        """The model's output (pytorch-grad-cam's method)."""
        return self.model(input_img)

    def __call__(self, input_img: torch.Tensor, target_category: int | None = None) -> np.ndarray:
        """Guided gradient (H, W, C) of image 0 for ``target_category`` (None: top-1)."""
        x = input_img.to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            if target_category is None:
                with torch.no_grad():
                    target_category = int(self.model(x)[0].argmax())
            category = int(target_category)
            grad, _ = guided_gradients(self.model, x, lambda out: out[0, category])
        finally:
            self.model.train(was_training)
        return grad[0].permute(1, 2, 0).cpu().numpy()


class _Guided(BaseCAM):
    """Shared: the guided gradient of the context's targets, as one map per image."""

    def guided_map(self, ctx: CAMContext) -> torch.Tensor:
        """(N, H, W) the colour-max of the guided gradient of each image's target score."""
        targets: TargetSet = ctx.targets
        grad, count = guided_gradients(
            self.model, ctx.inputs, lambda out: targets.scores(self.adapt(out))
        )
        if count == 0 and not any("no nn.ReLU" in n for n in self.notes):
            note = f"{type(self).__name__}: no nn.ReLU module to guide; this is the plain gradient"
            log.warning("%s", note)
            self.notes.append(note)
        ctx.info["guided_relus"] = float(count)
        return colour_max(grad)


@register(
    "guidedbackprop",
    label="Guided Backprop",
    family="gradient",
    paper="Springenberg et al., ICLR-W 2015, https://arxiv.org/abs/1412.6806",
    cost="1 forward + 1 backward through the whole network (input resolution)",
    aliases=("guided-backprop", "guidedbp", "guided-backpropagation"),
)
class GuidedBackprop(_Guided):
    r"""Guided back-propagation (Springenberg et al., 2015, https://arxiv.org/abs/1412.6806).

    The gradient of the target score with respect to the input, each ReLU passing back
    :math:`g_{in} = g_{out} \cdot [x > 0] \cdot [g_{out} > 0]`; the map is
    :math:`\max_c |\nabla_x y^c|` over the colour channels, at the input's resolution
    (``raw`` is that map). Model-wide: the target layer is ignored (noted in ``cam.notes``),
    ``eigen_smooth`` too. Not class-discriminative (Selvaraju et al. 2017, and Adebayo et al.
    2018's sanity check): compare with `GuidedGradCAM`.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> GuidedBackprop(model)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    needs_layer = False

    def __init__(
        self, model: nn.Module, target_layers: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(model, None, *args, **kwargs)
        if target_layers is not None:
            self.notes.append("guided back-propagation is model-wide; the target layer is ignored")

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        saliency = self.guided_map(ctx)
        return saliency, torch.zeros(len(saliency), 0, device=saliency.device)


@register(
    "guidedgradcam",
    label="Guided Grad-CAM",
    family="gradient",
    paper="Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391",
    cost="1 forward + 1 backward through the tail + 1 forward and backward of the whole network",
    aliases=("guided-gradcam", "guided-grad-cam"),
)
class GuidedGradCAM(_Guided):
    r"""Guided Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

    The guided back-propagation map (`GuidedBackprop`) times the Grad-CAM map upsampled to the
    input (bilinear, min-max normalised), element by element, as the paper's Fig. 2 and
    pytorch-grad-cam's example (``cam_mask * gb``):

    .. math::
        L^c = \max_c \big|\nabla^{guided}_x y^c\big| \odot \mathrm{up}(L^c_{Grad\text{-}CAM})

    (the colour-max commutes with the product, the Grad-CAM map being non-negative). ``raw``
    is that product at the input's resolution; ``eigen_smooth`` applies to the Grad-CAM part;
    several layers are fused as for every method.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> GuidedGradCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    layer_gradients = True

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        return GradCAM.weights(self, ctx)  # type: ignore[arg-type]

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        raw, weights = super().layer_map(ctx, eigen)
        size = (int(ctx.inputs.shape[-2]), int(ctx.inputs.shape[-1]))
        gradcam, _ = normalise_maps(raw.float(), size)
        return gradcam.to(torch.float64) * self.guided_map(ctx).double(), weights
