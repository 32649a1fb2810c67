"""Object detectors: one map per detected object (or per box the user gives).

A detector's output is a set of boxes, not logits. camscope turns it into the "logits" its
methods read: for the K reference objects of an image, `box_scores` gives a (N, K) tensor whose
column k is object k's *box score* (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``: among the
current detections, the one with the highest IoU with the reference box counts if that IoU
exceeds ``iou_threshold`` and its label is the reference label, with score IoU + confidence;
else 0). Explaining object k is then explaining class k of that tensor, so every CAM method
works unchanged: gradient methods back-propagate the box score, perturbation methods re-score
masked inputs, EigenCAM needs no target at all (gradient-free: its map is the same for every
object of the image).

Supported: torchvision's detectors (Faster R-CNN, Mask R-CNN, RetinaNet, FCOS, SSD, SSDlite),
which take images in [0, 1] and return ``[{"boxes", "labels", "scores"}]``, and Hugging Face
DETR-family ``*ForObjectDetection`` models (``logits`` over classes + "no object",
``pred_boxes`` as normalised (cx, cy, w, h)). Boxes are (x1, y1, x2, y2) in input pixels.

torchvision's detectors resize and pad the input internally: the feature map covers the padded
image, so the map is cut to the image's part before it is resized to the input (pytorch-grad-
cam draws the padded map over the image, shifted where there is padding).

Example::

    >>> import torch, torchvision
    >>> det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(
    ...     weights=None, weights_backbone=None, num_classes=3, min_size=96).eval()
    >>> result = explain_detections(det, torch.rand(3, 96, 128), method="eigencam",
    ...                             score_threshold=0.0)                 # doctest: +SKIP
    >>> result.maps.shape, result.detections[0].box                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camscope.layers import LayerError, resolve_layer
from camscope.logits import as_logits_model
from camscope.methods.base import normalise_maps
from camscope.methods.registry import build_cam
from camscope.methods.targets import box_match_score

__all__ = [
    "Detection",
    "DetectionExplanation",
    "NoDetectionsError",
    "UnmatchedBoxError",
    "box_scores",
    "default_detection_layer",
    "detect",
    "detector_categories",
    "detector_module",
    "explain_detections",
    "predictions",
]

log = logging.getLogger("camscope")


class NoDetectionsError(ValueError):
    """Nothing to explain: no detection at or above the score threshold (one line)."""


class UnmatchedBoxError(ValueError):
    """A reference box no detection of its class matches: its box score is 0 (one line)."""


@dataclass(frozen=True)
class Detection:
    """One object: box (x1, y1, x2, y2) in input pixels, class index, confidence, class name."""

    box: tuple[float, float, float, float]
    label: int
    score: float
    name: str = ""


@dataclass
class DetectionExplanation:
    """Maps of one image's objects.

    Attributes:
        detections: the K objects explained (in the order of ``maps``).
        maps: (K, H, W) float32 in [0, 1] at the input size.
        raw: (K, h, w) float32 maps at the layer's resolution (before the padding cut).
        empty: (K,) bool, maps without spatial variation (all zero).
        scores: (K,) the box score each map explains (IoU + confidence on the input; 2 when
            the detection is its own reference).
        layer: the layer explained.
        method: the registry name of the method.
        notes: substitutions (e.g. the whole network re-run per re-evaluation).
    """

    detections: list[Detection]
    maps: torch.Tensor
    raw: torch.Tensor
    empty: torch.Tensor
    scores: torch.Tensor
    layer: str
    method: str
    notes: list[str] = field(default_factory=list)


def _inner(model: nn.Module) -> nn.Module:
    return model.__dict__.get("inner", model)


def predictions(
    model: nn.Module, output: Any, size: tuple[int, int]
) -> list[dict[str, torch.Tensor]]:
    """A detector's raw output as ``[{"boxes" (x1, y1, x2, y2 pixels), "labels", "scores"}]``.

    Differentiable in the scores and boxes. ``size`` is the input's (H, W) (DETR's boxes are
    relative to it).
    """
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        return list(output)
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        output = output[0]  # ultralytics YOLO in eval: (candidates, raw head maps)
    if torch.is_tensor(output) and output.dim() == 3:  # YOLO (N, 4 + classes, anchors)
        return [_yolo_detections(candidates) for candidates in output]
    if hasattr(output, "pred_boxes") and hasattr(output, "logits"):
        probs = output.logits.softmax(-1)[..., :-1]  # the last class is "no object"
        scores, labels = probs.max(-1)
        cx, cy, w, h = output.pred_boxes.unbind(-1)
        height, width = size
        boxes = torch.stack(
            [
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            ],
            dim=-1,
        )
        return [
            {"boxes": b, "labels": lab, "scores": s}
            for b, lab, s in zip(boxes, labels, scores, strict=True)
        ]
    raise TypeError(
        f"not a detector output: {type(output).__name__} (expected torchvision's list of "
        "dicts or a DETR-style output with logits and pred_boxes)"
    )


def _yolo_detections(candidates: torch.Tensor, iou: float = 0.7) -> dict[str, torch.Tensor]:
    """One image's YOLO candidates (4 + classes, anchors) -> NMS'd detections (differentiable).

    Boxes are (cx, cy, w, h) in input pixels, class scores are sigmoids; per-class NMS at IoU
    0.7 and at most 300 detections (ultralytics' defaults) pick which candidates remain.
    """
    from torchvision.ops import batched_nms

    cx, cy, w, h = candidates[:4]
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    scores, labels = candidates[4:].max(dim=0)
    keep = batched_nms(boxes.detach(), scores.detach(), labels, iou)[:300]
    return {"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]}


def _box_score(pred: dict[str, torch.Tensor], box: torch.Tensor, label: int, iou: float):
    """The box score of one reference box (a 0-d tensor): IoU + confidence of its match.

    `camscope.methods.targets.box_match_score` among the detections *of the reference's
    class*: pytorch-grad-cam's FasterRCNNBoxScoreTarget takes the highest IoU over every class
    and scores 0 when that one has another label, which happens whenever a detector (RetinaNet,
    FCOS, Faster R-CNN's per-class boxes) reports the same box under two classes; the two agree
    otherwise (tested).
    """
    score = box_match_score(pred, box, label, iou, same_class=True)
    if score is not None:
        return score
    return pred["scores"].new_zeros(()) + 0 * pred["scores"].sum()  # 0, attached to the graph


class _BoxScoreOutput:
    """Output adapter: a detector's raw output -> (N, K) box scores of K reference objects."""

    def __init__(self, model: nn.Module, boxes: torch.Tensor, labels: Sequence[int], iou: float):
        self.model, self.boxes, self.labels, self.iou = model, boxes, list(labels), iou
        self.size: tuple[int, int] = (1, 1)

    def __call__(self, output: Any) -> torch.Tensor:
        preds = predictions(self.model, output, self.size)
        rows = [
            torch.stack(
                [
                    _box_score(p, b, lab, self.iou)
                    for b, lab in zip(self.boxes, self.labels, strict=True)
                ]
            )
            for p in preds
        ]
        return torch.stack(rows)


class _SizedLogits(nn.Module):
    """`LogitsModel` over a detector that tells the output adapter the input size first."""

    def __init__(self, model: nn.Module, adapter: _BoxScoreOutput) -> None:
        super().__init__()
        wrapped = as_logits_model(_inner(model), adapter)
        object.__setattr__(self, "wrapped", wrapped)
        object.__setattr__(self, "adapter", adapter)
        self._modules = wrapped._modules  # transparent: the detector's own layer names
        self._parameters, self._buffers = wrapped._parameters, wrapped._buffers
        self.training = wrapped.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self.adapter.size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.wrapped(x)


def box_scores(
    model: nn.Module, boxes: Any, labels: Sequence[int], iou_threshold: float = 0.5
) -> nn.Module:
    """``model`` as a module returning (N, K) box scores of K reference objects (see above).

    Layer names stay the detector's own (``backbone.body.layer4``).
    """
    ref = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if len(ref) != len(labels):
        raise ValueError(f"{len(ref)} boxes and {len(labels)} labels")
    return _SizedLogits(model, _BoxScoreOutput(model, ref, labels, iou_threshold)).eval()


def detect(
    model: nn.Module,
    image: torch.Tensor,
    score_threshold: float = 0.5,
    categories: Sequence[str] | None = None,
) -> list[Detection]:
    """The detections of one image (3, H, W) at or above ``score_threshold``, best first."""
    return _detect(model, image, score_threshold, categories)[0]


def _detect(
    model: nn.Module,
    image: torch.Tensor,
    score_threshold: float,
    categories: Sequence[str] | None,
) -> tuple[list[Detection], dict[str, torch.Tensor]]:
    """`detect` and the image's predictions it read them from (one forward pass)."""
    x = image[None] if image.dim() == 3 else image[:1]
    with torch.no_grad():
        pred = predictions(model, model(x), (int(x.shape[-2]), int(x.shape[-1])))[0]
    order = pred["scores"].argsort(descending=True)
    found = []
    for i in order.tolist():
        score = float(pred["scores"][i])
        if score < score_threshold:
            break
        label = int(pred["labels"][i])
        name = categories[label] if categories and 0 <= label < len(categories) else str(label)
        box = tuple(float(v) for v in pred["boxes"][i])
        found.append(Detection(box, label, score, name))  # type: ignore[arg-type]
    return found, pred


def detector_module(model: nn.Module) -> nn.Module:
    """The network itself: an ultralytics ``YOLO`` object's ``.model``; others as they are.

    An ultralytics ``DetectionModel`` is already the network (its ``.model`` is its layers'
    ``nn.Sequential``, which cannot run alone): returned as it is.
    """
    inner = getattr(model, "model", None)
    ultralytics = type(model).__module__.startswith("ultralytics")
    if ultralytics and isinstance(inner, nn.Module) and not isinstance(inner, nn.Sequential):
        return inner.eval()
    return model


def detector_categories(model: nn.Module) -> list[str] | None:
    """Class names a detector declares: ultralytics ``names``, Hugging Face ``id2label``."""
    inner = _inner(detector_module(model))
    names = getattr(inner, "names", None)
    if names is None and hasattr(inner, "config"):
        names = getattr(inner.config, "id2label", None)
    if isinstance(names, dict) and names:
        return [str(names.get(i, names.get(str(i), i))) for i in range(len(names))]
    return None


def default_detection_layer(model: nn.Module) -> str:
    """The last stage of the detector's backbone (a channels-first map).

    torchvision: the last module of ``backbone.body`` (``layer4`` on ResNet-FPN), SSD's
    ``backbone.features``; DETR: the last stage of its convolutional backbone.
    """
    modules = dict(_inner(model).named_modules())
    if "backbone.body" in modules:
        children = list(modules["backbone.body"]._modules)
        return f"backbone.body.{children[-1]}"
    if "backbone.features" in modules and "backbone.extra" in modules:
        return "backbone.features"  # SSD VGG: conv4_3 (its first detection map)
    if type(_inner(model)).__name__ == "DetectionModel" and "model" in modules:
        return f"model.{len(modules['model']) - 2}"  # YOLO: the layer before the Detect head
    stages = [n for n in modules if n.startswith("model.backbone") and n.endswith(".stages")]
    if stages:
        children = list(modules[stages[-1]]._modules)
        return f"{stages[-1]}.{children[-1]}"
    raise LayerError("no default layer known for this detector; pass layer=")


def _valid_region(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Fractions (h, w) of the feature map that cover the image (torchvision pads the rest)."""
    transform = getattr(_inner(model), "transform", None)
    if transform is None or not hasattr(transform, "batch_images"):
        return 1.0, 1.0
    with torch.no_grad():
        images, _ = transform(list(x[:1]))
    (h, w), (ph, pw) = images.image_sizes[0], images.tensors.shape[-2:]
    return h / ph, w / pw


def _cut(raw: torch.Tensor, region: tuple[float, float], size: tuple[int, int]):
    """Raw maps (K, h, w) -> maps (K, H, W) over the image part only, and empty flags."""
    if region == (1.0, 1.0):
        return normalise_maps(raw, size)
    fine = (raw.shape[-2] * 8, raw.shape[-1] * 8)
    up = F.interpolate(raw[:, None].float(), size=fine, mode="bilinear", align_corners=False)
    keep = up[:, :, : max(1, round(fine[0] * region[0])), : max(1, round(fine[1] * region[1]))]
    return normalise_maps(keep[:, 0], size)


def _references(
    model: nn.Module,
    x: torch.Tensor,
    boxes: Any,
    labels: Sequence[int] | None,
    score_threshold: float,
    categories: Sequence[str] | None,
) -> tuple[list[Detection], dict[str, torch.Tensor] | None]:
    """The objects to explain, and the predictions of the detection pass that found them."""
    if boxes is None:
        found, pred = _detect(model, x, score_threshold, categories)
        flat = [d for d in found if not (d.box[2] > d.box[0] and d.box[3] > d.box[1])]
        if flat:
            log.warning(
                "%d detection(s) with an empty box (zero width or height) skipped", len(flat)
            )
            found = [d for d in found if d not in flat]
        if not found:
            best = float(pred["scores"].max()) if len(pred["scores"]) else None
            shown = f"the best scores {best:.3f}" if best is not None else "nothing is detected"
            raise NoDetectionsError(
                f"no detection scores >= {score_threshold:g} ({shown}); lower the score "
                "threshold or give the boxes to explain"
            )
        return found, pred
    ref = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if labels is None or len(labels) != len(ref):
        raise ValueError("give one label per box (labels=)")
    given = [
        Detection(
            tuple(float(v) for v in b),  # type: ignore[arg-type]
            int(lab),
            float("nan"),
            categories[int(lab)] if categories else str(int(lab)),
        )
        for b, lab in zip(ref, labels, strict=True)
    ]
    return given, None


def explain_detections(
    model: nn.Module,
    image: torch.Tensor,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    score_threshold: float = 0.5,
    boxes: Any = None,
    labels: Sequence[int] | None = None,
    iou_threshold: float = 0.5,
    categories: Sequence[str] | None = None,
    max_objects: int | None = None,
    **options: Any,
) -> DetectionExplanation:
    """One map per object of ``image`` (3, H, W), in the input the detector takes.

    Args:
        model: a torchvision detector (images in [0, 1]), a Hugging Face DETR-family
            ``*ForObjectDetection``, or an ultralytics YOLO (the ``YOLO`` object or its
            ``DetectionModel``; images in [0, 1], sides multiples of 32), in eval mode.
        image: (3, H, W) or (1, 3, H, W).
        method: any registered method (``gradcam``, ``eigencam`` gradient-free, ...).
        layer: the CAM layer (default `default_detection_layer`).
        score_threshold: objects = detections scoring at least this (ignored with ``boxes``).
        boxes: explain these (x1, y1, x2, y2) boxes (input pixels) instead of detections.
        labels: the class of each of ``boxes``.
        iou_threshold: a current detection matches a reference box above this IoU.
        categories: class names, index-aligned with the detector's labels (default: the
            names the model declares, `detector_categories`).
        max_objects: explain at most this many (the best-scoring first).
        **options: the method's options (registry names).

    Raises:
        NoDetectionsError: nothing at or above ``score_threshold``; never an empty result.
        UnmatchedBoxError: a given box that no detection of its class matches (box score 0).
    """
    model = detector_module(model)
    categories = categories if categories is not None else detector_categories(model)
    x = (image[None] if image.dim() == 3 else image[:1]).detach()
    size = (int(x.shape[-2]), int(x.shape[-1]))
    xf, scale = _detector_frame(model, x)
    if boxes is not None:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) / scale
    refs, pred = _references(model, xf, boxes, labels, score_threshold, categories)
    refs = refs[:max_objects]
    wrapped = box_scores(model, [d.box for d in refs], [d.label for d in refs], iou_threshold)
    _check_matched(wrapped, xf, refs, iou_threshold, pred)
    default = default_detection_layer(model) if layer is None else layer
    layer_name, _ = resolve_layer(wrapped, default)
    cam = build_cam(method, wrapped, [layer_name], **options)
    try:
        raws, scores = [], []
        for k in range(len(refs)):
            result = cam.explain(xf, targets=[k])
            raws.append(result.raw[0])
            scores.append(result.logits[0, k])
            if getattr(cam, "always_eigen", False):  # gradient-free: the same map for all
                raws, scores = [result.raw[0]] * len(refs), list(result.logits[0])
                break
    finally:
        cam.close()
    raw = torch.stack(raws)
    maps, empty = _cut(raw, _valid_region(model, xf), size)
    found = [
        Detection(tuple(float(v) for v in torch.tensor(d.box) * scale), d.label, d.score, d.name)
        for d in refs
    ]
    notes = list(dict.fromkeys(cam.notes))
    return DetectionExplanation(
        found, maps, raw, empty, torch.stack(scores).float(), layer_name, cam.name, notes
    )


def _check_matched(
    wrapped: nn.Module,
    x: torch.Tensor,
    refs: list[Detection],
    iou: float,
    pred: dict[str, torch.Tensor] | None = None,
) -> None:
    """Refuse an object whose box score is 0 on the input: its map would be empty noise.

    ``pred``: the input's predictions when the detection pass already computed them (the
    scores are then read from them, as ``wrapped(x)`` would, without another pass).
    """
    with torch.no_grad():
        if pred is None:
            scores = wrapped(x)[0]
        else:
            scores = [_box_score(pred, torch.tensor(d.box), d.label, iou) for d in refs]
    for k, (ref, score) in enumerate(zip(refs, scores, strict=True)):
        if not float(score) > 0:
            box = ", ".join(f"{v:.1f}" for v in ref.box)
            raise UnmatchedBoxError(
                f"object {k} (class {ref.name or ref.label}, box {box}): no detection of that "
                f"class overlaps it by IoU > {iou:g}, so its box score is 0 and there is "
                "nothing to explain"
            )


def _detector_frame(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input in the detector's own frame, and the (x, y, x, y) scale back to the input.

    SSD resizes every input to a fixed size (300x300) whatever its aspect: explaining it at
    that size keeps the feature grid in proportion to the input; boxes are scaled back.
    """
    fixed = getattr(getattr(_inner(model), "transform", None), "fixed_size", None)
    if not fixed:
        return x, torch.ones(4)
    h, w = int(fixed[0]), int(fixed[1])
    xf = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    sy, sx = x.shape[-2] / h, x.shape[-1] / w
    return xf, torch.tensor([sx, sy, sx, sy])
