"""An edge detector as a baseline: pytorch-grad-cam's ``sobel_cam`` and the `SobelCAM` method.

A map that looks at the image and never at the model. Adebayo et al. (NeurIPS 2018,
https://arxiv.org/abs/1810.03292) showed that some saliency methods are close to an edge
detector; a method that does not beat this one on the faithfulness metrics, or that agrees
with it more than with Grad-CAM, explains the image rather than the model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from camscope.methods.base import BaseCAM, CAMContext
from camscope.methods.registry import register

__all__ = ["SobelCAM", "sobel_cam"]

_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_LUMA = (0.299, 0.587, 0.114)


def _sobel_magnitude(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) -> (|d/dx|, |d/dy|) of the 3 x 3 Sobel filter, borders reflected (reflect-101)."""
    kx = torch.tensor(_SOBEL_X, dtype=gray.dtype, device=gray.device)
    kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3)
    padded = F.pad(gray[:, None], (1, 1, 1, 1), mode="reflect")
    grads = F.conv2d(padded, kernels)
    return grads[:, 0].abs(), grads[:, 1].abs()


def sobel_cam(img: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``sobel_cam``: the edges of an RGB uint8 image (H, W, 3) -> (H, W) uint8.

    As OpenCV computes it there: grey = (9798 R + 19235 G + 3735 B + 2^14) >> 15, the 3 x 3
    Sobel derivatives (borders reflected without repeating the edge), each's absolute value
    rounded and saturated to uint8, then their mean, rounded (half to even) and saturated.
    """
    rgb = np.asarray(img).astype(np.int64)
    gray = (rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)) >> 15
    gx, gy = _sobel_magnitude(torch.from_numpy(gray[None].astype(np.float64)))
    abs_x = np.clip(np.rint(gx[0].numpy()), 0, 255)
    abs_y = np.clip(np.rint(gy[0].numpy()), 0, 255)
    return np.clip(np.rint(0.5 * abs_x + 0.5 * abs_y), 0, 255).astype(np.uint8)


@register(
    "sobel",
    label="Sobel edges",
    family="baseline",
    paper="baseline: pytorch-grad-cam's sobel_cam; an edge detector as in Adebayo et al., "
    "NeurIPS 2018, https://arxiv.org/abs/1810.03292",
    cost="1 forward pass (for the targets; the map ignores the model)",
    aliases=("sobelcam", "sobel-cam", "edges"),
)
class SobelCAM(BaseCAM):
    r"""A baseline that ignores the model: the Sobel edges of the input.

    With :math:`G` the luma (0.299 R + 0.587 G + 0.114 B; the channel mean for inputs that do
    not have 3 channels) of the input as given (normalised),

    .. math::
        L = \tfrac12 |S_x * G| + \tfrac12 |S_y * G|

    with the 3 x 3 Sobel filters, borders reflected: pytorch-grad-cam's ``sobel_cam`` on the
    tensor rather than on a uint8 picture (so without its rounding), at the input's resolution.
    The map is the same for every target. See the module docstring (Adebayo et al., 2018,
    https://arxiv.org/abs/1810.03292) for why it is worth comparing against.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> SobelCAM(model)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    needs_layer = False

    def __init__(self, model: torch.nn.Module, target_layers: object = None, *args, **kwargs):
        super().__init__(model, None, *args, **kwargs)
        if target_layers is not None:
            self.notes.append("the Sobel baseline reads the input only; the layer is ignored")

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        x = ctx.inputs.double()
        if x.shape[1] == 3:
            luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)
            gray = torch.einsum("nchw,c->nhw", x, luma)
        else:
            gray = x.mean(dim=1)
        gx, gy = _sobel_magnitude(gray)
        return 0.5 * gx + 0.5 * gy, torch.zeros(len(x), 0, device=x.device)
