"""Meta-methods: a base CAM method run several times and its maps combined.

`RefineCAM` multiplies a base method's maps of several layers; `SESS` runs the base method on
sliding windows over several scales of the image and fuses the windows' maps. Both take
pytorch-grad-cam's ``base_method=`` argument (a camscope method class) and are model-wide
methods over `BaseCAM`: one forward pass resolves the targets, then `layer_map` drives the base
method, whose layers they are (``cam.base.layers``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camscope.methods.base import BaseCAM, CAMContext, normalise_maps
from camscope.methods.gradient import GradCAM, GradCAMPlusPlus
from camscope.methods.registry import OptionSpec, register
from camscope.methods.targets import TargetSet

__all__ = ["SESS", "RefineCAM", "gaussian_blur", "window_starts"]


class _Meta(BaseCAM):
    """A model-wide method over a base method that holds the layers."""

    needs_layer = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any,
        reshape_transform: Any,
        base_method: type[BaseCAM],
        output: Any,
        base_options: dict[str, Any],
    ) -> None:
        super().__init__(model, None, output=output)
        self.base = base_method(
            model, target_layers, reshape_transform, output=output, **base_options
        )
        self.notes = self.base.notes

    def close(self) -> None:  # noqa: D102
        super().close()
        self.base.close()


@register(
    "refinecam",
    label="RefineCAM",
    family="meta",
    paper="pytorch-grad-cam's RefineCAM, https://arxiv.org/abs/2605.14641",
    cost="its base method (Grad-CAM++) once per target layer",
    aliases=("refine-cam",),
)
class RefineCAM(_Meta):
    r"""RefineCAM: the product of a base method's maps at several layers (https://arxiv.org/abs/2605.14641).

    With :math:`M_l \in [0, 1]` the base method's map of layer l (Grad-CAM++ by default),
    min-max normalised and upsampled to the input,

    .. math::
        L = \mathrm{minmax}\Big(\prod_l M_l\Big)

    so that a region stays only where every layer marks it: deep layers denoise early,
    high-resolution ones. As pytorch-grad-cam's ``RefineCAM`` (``base_method=``; other keyword
    arguments go to the base method). With one layer it is the base method.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> RefineCAM(model, ["layer2", "layer3", "layer4"])(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        base_method: type[BaseCAM] = GradCAMPlusPlus,
        *,
        output: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, base_method, output, kwargs)

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        size = (int(ctx.inputs.shape[-2]), int(ctx.inputs.shape[-1]))
        product = torch.ones(len(ctx.inputs), *size, dtype=torch.float64, device=ctx.inputs.device)
        for index in range(len(self.base.layers)):
            layer_ctx = self.base.context(ctx.inputs, index, ctx.targets)
            raw, _ = self.base.layer_map(layer_ctx, eigen or self.base.always_eigen)
            maps, _ = normalise_maps(raw.float(), size)
            product = product * maps.double()
            ctx.info.update(layer_ctx.info)
        return product, torch.zeros(len(product), 0, device=product.device)


def window_starts(length: int, step: int, window: int) -> list[int]:
    """Starts of the windows along one side; the last one is moved back inside the image."""
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def gaussian_blur(maps: torch.Tensor, size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """(N, H, W) Gaussian blur, borders reflected without repeating the edge (OpenCV's default)."""
    r = size // 2
    offsets = torch.arange(size, dtype=torch.float64, device=maps.device) - r
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    x = maps[:, None]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, size, 1))
    return x[:, 0]


SESS_SCALES = OptionSpec(
    "num_scales", "--sess-scales", int, 12,
    "SESS: how many scales of the image (each adds its sliding windows; cost grows fast).",
    minimum=1,
)  # fmt: skip
SESS_PRE_FILTER = OptionSpec(
    "pre_filter_ratio", "--sess-pre-filter", float, 0.0,
    "SESS: share of the lowest-scoring windows dropped before their CAMs are computed.",
    minimum=0,
)  # fmt: skip


@register(
    "sess",
    label="SESS",
    family="meta",
    paper="Tursun et al., ECCV 2022, https://arxiv.org/abs/2207.01769",
    cost="1 forward per window to score it + its base method (Grad-CAM) per window; windows "
    "of --sess-scales scales (about 150 for 12 scales of a square image)",
    options=(SESS_SCALES, SESS_PRE_FILTER),
    sanity_options={"num_scales": 3},
)
class SESS(_Meta):
    r"""SESS, Saliency Enhancing with Scaling and Sliding (Tursun et al., ECCV 2022).

    Paper: https://arxiv.org/abs/2207.01769. The image is resized so that its shorter side is
    each of the scales (default: 12 scales from the window size up in steps of 2/7 of it), a
    window (default: the shorter side) slides over each, and the base method (Grad-CAM by
    default) explains every window for the image's target. A window's map is weighted by its
    target score (of the softmax; clipped at 0) over the highest, pasted back at its place and
    resized to the input; the maps are fused by a mean over the windows above ``theta`` at each
    pixel (``pool="mean"``) or a maximum, then blurred (Gaussian 11 x 11, sigma 5).

    As pytorch-grad-cam's ``SESS`` (same arguments; OpenCV's resize and blur written in
    torch). ``raw`` is the fused map at the input's resolution; images are enhanced one at a
    time.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> SESS(model, "layer4[-1]", num_scales=2)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        base_method: type[BaseCAM] = GradCAM,
        scales: list[int] | None = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: int | None = None,
        step_size: int | None = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        *,
        output: Any = None,
        **kwargs: Any,
    ) -> None:
        if pool not in ("mean", "max"):
            raise ValueError(f"pool has to be either 'mean' or 'max'. Got: {pool}.")
        if not 0.0 <= pre_filter_ratio < 1.0:
            raise ValueError(f"pre_filter_ratio has to be in [0, 1). Got: {pre_filter_ratio}.")
        if num_scales < 1:
            raise ValueError(f"num_scales has to be at least 1. Got: {num_scales}.")
        super().__init__(model, target_layers, reshape_transform, base_method, output, kwargs)
        self.scales, self.num_scales, self.scale_step_ratio = scales, num_scales, scale_step_ratio
        self.window_size, self.step_size = window_size, step_size
        self.pre_filter_ratio, self.theta, self.pool = pre_filter_ratio, theta, pool
        self.smooth, self.use_softmax_scores = smooth, use_softmax_scores
        self.batch_size = batch_size

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        maps = [self._enhance(ctx, i, eigen) for i in range(len(ctx.inputs))]
        fused = torch.stack(maps)
        return fused, torch.zeros(len(fused), 0, device=fused.device)

    def get_scales(self, window: int) -> list[int]:
        """The sizes of the shorter side (pytorch-grad-cam's method)."""
        if self.scales is not None:
            return list(self.scales)
        step = int(round(window * self.scale_step_ratio))
        return [window + step * i for i in range(self.num_scales)]

    def _patches(self, image: torch.Tensor, window: int, step: int):
        """Windows (1, C, w, w) of every scale and (x1, y1, scaled width, scaled height)."""
        from torchvision.transforms.functional import resize  # as pytorch-grad-cam resizes

        patches, places = [], []
        for scale in self.get_scales(window):
            if scale < window:
                raise ValueError(f"Every scale has to be at least the window size {window}.")
            scaled = resize(image, scale)
            height, width = scaled.shape[-2:]
            for y in window_starts(height, step, window):
                for x in window_starts(width, step, window):
                    patches.append(scaled[:, :, y : y + window, x : x + window])
                    places.append((x, y, width, height))
        return patches, places

    def _scores(self, patches: list[torch.Tensor], targets: TargetSet, image: int) -> torch.Tensor:
        """The image's target score on every window (softmax of the output by default), >= 0."""
        scores = []
        with torch.no_grad():
            for start in range(0, len(patches), self.batch_size):
                out = self.adapt(self.model(torch.cat(patches[start : start + self.batch_size])))
                if self.use_softmax_scores:
                    out = torch.softmax(out.float(), dim=-1)
                scores.append(targets.rows(out, image).double())
        return torch.cat(scores).clamp_min(0)

    def _window_maps(self, x: torch.Tensor, targets: Any, eigen: bool) -> torch.Tensor:
        """The base method's maps (B, w, w), min-max normalised BEFORE the upsampling.

        The same maps as ``base.explain(...).maps`` up to rounding, but a pixel that is the
        minimum of its map is exactly 0 (bilinear weights of a constant region can leave
        one-ulp ripples): the ``> theta`` test of the fusion counts pixels as the paper's (and
        pytorch-grad-cam's) zero-based maps do.
        """
        result = self.base.explain(x, targets, False, eigen)
        if len(self.base.layers) > 1:
            return result.maps  # several layers: already min-max per layer, then resized
        up = F.interpolate(
            _minmax(result.raw)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return _minmax(up[:, 0])

    def _enhance(self, ctx: CAMContext, i: int, eigen: bool) -> torch.Tensor:
        """The fused (H, W) map of image ``i`` (pytorch-grad-cam's ``forward_single_image``)."""
        image = ctx.inputs[i : i + 1]
        size = (int(image.shape[-2]), int(image.shape[-1]))
        window = self.window_size or min(size)
        patches, places = self._patches(image, window, self.step_size or window)
        scores = self._scores(patches, ctx.targets, i)
        order = torch.argsort(scores, stable=True)[int(len(scores) * self.pre_filter_ratio) :]
        top = scores[order[-1]]
        weights = scores[order] / top if top > 0 else torch.ones(len(order), dtype=scores.dtype)
        fns = ctx.targets.functions
        target = int(ctx.targets.indices[i]) if fns is None else fns[i]
        total = torch.zeros(size, dtype=torch.float32, device=image.device)
        counts = torch.zeros_like(total)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size].tolist()
            targets = target if isinstance(target, int) else [target] * len(batch)
            x = torch.cat([patches[j] for j in batch])
            cams = self._window_maps(x, targets, eigen)
            for cam, weight, j in zip(cams, weights[start:], batch, strict=False):
                pasted = _paste(cam * float(weight), places[j], size)
                if self.pool == "max":
                    total = torch.maximum(total, pasted)
                else:
                    keep = pasted > self.theta
                    total, counts = total + torch.where(keep, pasted, 0.0), counts + keep
        ctx.info["sess_windows"] = ctx.info.get("sess_windows", 0.0) + float(len(order))
        if self.pool == "mean":
            total = torch.where(counts > 0, total / counts.clamp_min(1), 0.0)
        return gaussian_blur(total[None])[0] if self.smooth else total


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max to [0, 1] of (N, h, w); a flat map becomes 0."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def _paste(cam: torch.Tensor, place: tuple[int, int, int, int], size: tuple[int, int]):
    """A window's map put back at (x, y) of its scaled image, resized to the input (bilinear)."""
    x, y, width, height = place
    canvas = cam.new_zeros(1, 1, height, width, dtype=torch.float32)
    canvas[0, 0, y : y + cam.shape[0], x : x + cam.shape[1]] = cam
    return F.interpolate(canvas, size=size, mode="bilinear", align_corners=False)[0, 0]
