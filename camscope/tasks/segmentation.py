"""Semantic segmentation: a map for one class over a region of the image.

The target is pytorch-grad-cam's ``SemanticSegmentationTarget``: the sum of class ``c``'s
per-pixel scores over a region. The region is where the model predicts ``c`` on the input
(argmax over classes), or a region the caller gives (a boolean mask, or a box (x1, y1, x2, y2)
in input pixels). A map is never drawn for a region that is empty: `EmptyRegionError`.

Models: torchvision's FCN, DeepLabV3 and LR-ASPP (their output dict's ``"out"``), and Hugging
Face ``*ForSemanticSegmentation`` such as SegFormer (``.logits`` at a quarter of the input size,
upsampled bilinearly to the input as its image processor's post-processing does).

Example::

    >>> import torch, torchvision
    >>> net = torchvision.models.segmentation.fcn_resnet50(
    ...     weights=None, weights_backbone=None, num_classes=3, aux_loss=False).eval()
    >>> result = explain_segmentation(net, torch.randn(3, 64, 64), 1)   # doctest: +SKIP
    >>> result.map.shape                                                  # doctest: +SKIP
    torch.Size([64, 64])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camscope.layers import LayerError, resolve_layer
from camscope.logits import as_logits_model
from camscope.methods.registry import build_cam
from camscope.methods.targets import SemanticSegmentationTarget

__all__ = [
    "EmptyRegionError",
    "SegmentationExplanation",
    "default_segmentation_layer",
    "explain_segmentation",
    "region_mask",
    "segmentation_model",
]


class EmptyRegionError(ValueError):
    """The region to explain holds no pixel (one line)."""


@dataclass
class SegmentationExplanation:
    """One class's map over a region.

    Attributes:
        map: (H, W) float32 in [0, 1] at the input size.
        raw: (h, w) float32 at the layer's resolution.
        empty: the map has no spatial variation (all zero).
        category: the class explained.
        region: (H, W) bool, the pixels whose scores were summed.
        score: the target's value on the input (sum of the class's scores over the region).
        layer, method: what was explained where.
        notes: substitutions (e.g. the whole network re-run per re-evaluation).
    """

    map: torch.Tensor
    raw: torch.Tensor
    empty: bool
    category: int
    region: torch.Tensor
    score: float
    layer: str
    method: str
    notes: list[str] = field(default_factory=list)


def _inner(model: nn.Module) -> nn.Module:
    return model.__dict__.get("inner", model)


class _PixelScores:
    """Output adapter: (N, K, H, W) per-pixel class scores at the input size."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def __call__(self, output: Any) -> torch.Tensor:
        if isinstance(output, dict) and "out" in output:
            scores = output["out"]
        elif hasattr(output, "logits"):
            scores = output.logits
        else:
            raise TypeError(
                f"not a segmentation output: {type(output).__name__} (expected torchvision's "
                "dict with 'out' or a Hugging Face output with logits)"
            )
        if self.size is not None and tuple(scores.shape[-2:]) != self.size:
            scores = F.interpolate(scores, size=self.size, mode="bilinear", align_corners=False)
        return scores


class _Segmenter(nn.Module):
    """The model as (N, 3, H, W) -> (N, K, H, W); its layer names stay its own."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        adapter = _PixelScores()
        wrapped = as_logits_model(_inner(model), adapter)
        object.__setattr__(self, "wrapped", wrapped)
        object.__setattr__(self, "adapter", adapter)
        self._modules = wrapped._modules
        self._parameters, self._buffers = wrapped._parameters, wrapped._buffers
        self.training = wrapped.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.adapter.size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.wrapped(x)


def segmentation_model(model: nn.Module) -> nn.Module:
    """``model`` as a module returning per-pixel class scores (N, K, H, W) at the input size."""
    return _Segmenter(model).eval()


def default_segmentation_layer(model: nn.Module) -> str:
    """The last stage of the encoder.

    torchvision: the last module of ``backbone`` (``layer4`` for FCN / DeepLabV3, pytorch-grad-
    cam's tutorial layer; LR-ASPP's high-level MobileNet features); SegFormer: the norm of the
    last encoder stage (tokens of the coarsest grid).
    """
    modules = dict(_inner(model).named_modules())
    if "backbone" in modules and modules["backbone"]._modules:
        return f"backbone.{list(modules['backbone']._modules)[-1]}"
    stage_norms = re.compile(r".*(stages\.\d+\.layer_norm|encoder\.layer_norm\.\d+)")
    norms = [n for n in modules if stage_norms.fullmatch(n)]  # transformers 5 / 4 naming
    if norms:
        return norms[-1]
    raise LayerError("no default layer known for this segmentation model; pass layer=")


def region_mask(region: Any, size: tuple[int, int]) -> torch.Tensor:
    """A region given as an (H, W) mask (bool or 0/1) or a box (x1, y1, x2, y2) -> (H, W) bool."""
    value = torch.as_tensor(region)
    if value.shape == (4,) and size != (4,):
        x1, y1, x2, y2 = (float(v) for v in value)
        ys = torch.arange(size[0], dtype=torch.float32)[:, None] + 0.5
        xs = torch.arange(size[1], dtype=torch.float32)[None, :] + 0.5
        return (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    if tuple(value.shape) != tuple(size):
        raise ValueError(f"a region mask must be {size[0]}x{size[1]}, got {tuple(value.shape)}")
    return value.bool()


def explain_segmentation(
    model: nn.Module,
    image: torch.Tensor,
    category: int,
    *,
    region: Any = None,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    **options: Any,
) -> SegmentationExplanation:
    """The map of class ``category`` over its predicted region (or ``region``) of ``image``.

    Args:
        model: a torchvision segmentation model or a Hugging Face ``*ForSemanticSegmentation``.
        image: (3, H, W) or (1, 3, H, W), normalised as the model expects.
        category: the class index.
        region: None (the pixels predicted as ``category``), an (H, W) mask, or a box
            (x1, y1, x2, y2) in input pixels.
        method: any registered method.
        layer: the CAM layer (default `default_segmentation_layer`).
        **options: the method's options.

    Raises:
        EmptyRegionError: the class is predicted nowhere and no region is given, or the region
            given is empty.
    """
    x = (image[None] if image.dim() == 3 else image[:1]).detach()
    size = (int(x.shape[-2]), int(x.shape[-1]))
    wrapped = segmentation_model(model)
    with torch.no_grad():
        scores = wrapped(x)[0]
    if not 0 <= int(category) < scores.shape[0]:
        raise ValueError(f"class {category} is out of range 0..{scores.shape[0] - 1}")
    if region is None:
        mask = scores.argmax(dim=0) == int(category)
        if not mask.any():
            raise EmptyRegionError(
                f"class {category} is predicted nowhere in the image; give a region (a mask or "
                "a box) to explain it there"
            )
    else:
        mask = region_mask(region, size)
        if not mask.any():
            raise EmptyRegionError("the region given holds no pixel of the image")
    target = SemanticSegmentationTarget(int(category), mask.float())
    name, _ = resolve_layer(wrapped, default_segmentation_layer(model) if layer is None else layer)
    cam = build_cam(method, wrapped, [name], **options)
    try:
        result = cam.explain(x, targets=[target])
    finally:
        cam.close()
    return SegmentationExplanation(
        result.maps[0],
        result.raw[0],
        bool(result.empty[0]),
        int(category),
        mask,
        float(target(scores)),
        name,
        cam.name,
        list(dict.fromkeys(cam.notes)),
    )
