"""What a CAM explains: targets on the model's output, and the model-output adapter.

A target turns one image's model output (a row of logits, or a segmentation map) into the
scalar the CAM explains. The classes carry pytorch-grad-cam's names and call semantics, so code
written for it works unchanged::

    >>> import torch
    >>> ClassifierOutputTarget(2)(torch.tensor([0.1, 0.5, 3.0]))
    tensor(3.)

`resolve_targets` accepts None (each image's top-1 class), one class index for every image, a
sequence or tensor of indices, or a sequence of callables (one per image); a length that is not
the batch size is an error, never a silent zip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "box_match_score",
    "FinerWeightedTarget",
    "NamedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
    "TargetSet",
    "import_target",
    "is_target_spec",
    "Targets",
    "output_adapter",
    "resolve_targets",
]

Target = Callable[[torch.Tensor], torch.Tensor]
Targets = int | Sequence[int] | Sequence[Target] | torch.Tensor | Target | None


class ClassifierOutputTarget:
    """The logit of ``category`` (pytorch-grad-cam's target of the same name)."""

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if model_output.dim() == 1:
            return model_output[self.category]
        return model_output[:, self.category]


class ClassifierOutputSoftmaxTarget(ClassifierOutputTarget):
    """The softmax probability of ``category``."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().__call__(torch.softmax(model_output, dim=-1))


class ClassifierOutputReST(ClassifierOutputTarget):
    """Logit minus cross-entropy of ``category`` (ReST, https://arxiv.org/abs/2501.06261)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return super().__call__(model_output) - super().__call__(
            -torch.log_softmax(model_output, dim=-1)
        )


class BinaryClassifierOutputTarget:
    """A one-output binary classifier: the output for category 1, its negation otherwise."""

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return model_output * (1 if self.category == 1 else -1)


class SoftmaxOutputTarget:
    """The softmax of the output (pytorch-grad-cam's name)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """The output itself (pytorch-grad-cam's name)."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return model_output


class FinerWeightedTarget:
    r"""Finer-CAM's target: ``main_category`` against similar classes (pytorch-grad-cam's name).

    Zhang et al., CVPR 2025, https://arxiv.org/abs/2501.11309. With :math:`y` the logits and
    :math:`p = \mathrm{softmax}(y)`, over the comparison classes :math:`j`:

    .. math::
        s = \frac{\sum_j p_j\,(y_{main} - \alpha\, y_j)}{\sum_j p_j + 10^{-9}}

    ``main_category`` may also be a target callable (camscope's FinerCAM wraps any target);
    then :math:`y_{main}` is its score on the row.
    """

    def __init__(self, main_category: Any, comparison_categories: Sequence[int], alpha: float):
        self.main_category = main_category
        self.comparison_categories = [int(c) for c in comparison_categories]
        self.alpha = float(alpha)
        if not callable(main_category):
            self.main_category = int(main_category)
            self.category = self.main_category

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        def select(index: int) -> torch.Tensor:
            return model_output[index] if model_output.ndim == 1 else model_output[..., index]

        main = self.main_category
        score = main(model_output) if callable(main) else select(main)
        prob = torch.softmax(model_output, dim=-1)
        numerator = denominator = torch.zeros_like(score)
        for j in self.comparison_categories:
            weight = prob[..., j]
            numerator = numerator + weight * (score - self.alpha * select(j))
            denominator = denominator + weight
        return numerator / (denominator + 1e-9)


class SemanticSegmentationTarget:
    """Sum of class ``category``'s scores over a spatial ``mask`` of a (K, H, W) output."""

    def __init__(self, category: int, mask: Any) -> None:
        self.category = int(category)
        self.mask = torch.as_tensor(mask)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        mask = self.mask.to(device=model_output.device, dtype=model_output.dtype)
        return (model_output[self.category] * mask).sum()


def box_match_score(
    detections: dict[str, torch.Tensor],
    box: Any,
    label: int,
    iou_threshold: float = 0.5,
    *,
    same_class: bool = True,
) -> torch.Tensor | None:
    """THE box score of one reference box: IoU + confidence of its matching detection (0-d).

    The match is the detection with the highest IoU with ``box``, if that IoU exceeds
    ``iou_threshold`` and its label is ``label``; None when nothing matches. ``same_class``
    True looks only among the detections of ``label`` (camscope's detection task: a detector
    that reports one box under two classes still matches); False among all of them, as
    pytorch-grad-cam's `FasterRCNNBoxScoreTarget`. The two agree whenever no other class's
    box overlaps more.
    """
    from torchvision.ops import box_iou

    boxes, labels, scores = detections["boxes"], detections["labels"], detections["scores"]
    if same_class:
        keep = labels == int(label)
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    if len(boxes) == 0:
        return None
    ious = box_iou(torch.as_tensor(box).to(boxes).reshape(1, 4), boxes)[0]
    best = ious.argmax()
    if ious[best] > iou_threshold and int(labels[best]) == int(label):
        return ious[best] + scores[best]
    return None


class FasterRCNNBoxScoreTarget:
    """Detections matching ``bounding_boxes`` / ``labels``: the sum of IoU + score of each match.

    For each given box, the detection with the highest IoU counts if that IoU exceeds
    ``iou_threshold`` and its label is the given one (`box_match_score` with ``same_class``
    False). The result is a (1,) tensor on the detections' device and in their dtype (0 when
    nothing is detected), as pytorch-grad-cam's.

    Args:
        labels: one class label per box.
        bounding_boxes: (x1, y1, x2, y2) boxes (arrays or tensors).
        iou_threshold: the IoU a detection must exceed to match.
    """

    def __init__(self, labels: Sequence[int], bounding_boxes: Any, iou_threshold: float = 0.5):
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: dict[str, torch.Tensor]) -> torch.Tensor:  # noqa: D102
        boxes = model_outputs["boxes"]
        output = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0:
            return output
        for box, label in zip(self.bounding_boxes, self.labels, strict=False):
            score = box_match_score(model_outputs, box, label, self.iou_threshold, same_class=False)
            if score is not None:
                output = output + score
        return output


class NamedTarget:
    """A callable target imported from ``module:function`` (the CLI's ``--target pkg.mod:fn``).

    ``function(output_row) -> scalar`` like any pytorch-grad-cam target; ``str()`` is the spec,
    so a run's settings (and their hash) name it, not its address in memory.
    """

    def __init__(self, spec: str, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.spec = spec
        self.function = function

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.function(model_output)

    def __str__(self) -> str:
        return self.spec

    __repr__ = __str__


def is_target_spec(text: object) -> bool:
    """True for a ``module:function`` spec (dotted names both sides of one colon)."""
    import re

    return isinstance(text, str) and bool(
        re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text.strip())
    )


def import_target(spec: str) -> NamedTarget:
    """Import ``module:function`` (a dotted attribute path after the colon) as a target.

    Raises:
        ValueError: one line: the module or attribute is missing, or it is not callable.
    """
    import importlib

    module_name, _, attr = spec.strip().partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--target {spec}: cannot import it ({exc})") from None
    if not callable(value):
        raise ValueError(f"--target {spec}: {type(value).__name__} is not callable")
    return NamedTarget(spec.strip(), value)


@dataclass
class TargetSet:
    """Resolved targets of a batch of N images.

    Attributes:
        indices: (N,) int64 class per image; -1 where a callable target names no ``category``.
        functions: one callable per image, or None when every target is a plain class index
            (then scores are a vectorised gather).
    """

    indices: torch.Tensor
    functions: tuple[Target, ...] | None = None

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N,) each image's target score from the batch's outputs (row i = image i)."""
        if self.functions is None:
            return outputs.gather(1, self.indices[:, None].to(outputs.device))[:, 0]
        return torch.stack(
            [_scalar(f(row)) for f, row in zip(self.functions, outputs, strict=True)]
        )

    def rows(self, outputs: torch.Tensor, image: int) -> torch.Tensor:
        """(B,) image ``image``'s target score on each row of ``outputs`` (modified copies)."""
        if self.functions is None:
            return outputs[:, int(self.indices[image])]
        function = self.functions[image]
        return torch.stack([_scalar(function(row)) for row in outputs])


def _scalar(value: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value)
    if value.numel() != 1:
        raise ValueError(
            f"a target must return one number per image, got shape {tuple(value.shape)}"
        )
    return value.reshape(())


def resolve_targets(targets: Targets | TargetSet, outputs: torch.Tensor) -> TargetSet:
    """Targets for a batch from any accepted form (see the module docstring).

    Args:
        targets: None, int, sequence/tensor of ints, a callable, or a sequence of callables
            (ints and callables may be mixed).
        outputs: the batch's model outputs (N, ...); (N, num_classes) for class indices.
    """
    if isinstance(targets, TargetSet):
        return targets
    n = outputs.shape[0]
    if targets is None:
        if outputs.dim() != 2:
            raise ValueError(
                f"the model outputs shape {tuple(outputs.shape)}, not (N, classes): give targets"
            )
        return TargetSet(outputs.argmax(dim=1))
    if callable(targets) and not isinstance(targets, torch.Tensor):
        targets = [targets] * n
    if (
        isinstance(targets, Sequence)
        and not isinstance(targets, str)
        and any(callable(t) for t in targets)
    ):
        return _callable_targets(list(targets), n, outputs)
    return TargetSet(_index_targets(targets, n, outputs))


def _index_targets(targets: Any, n: int, outputs: torch.Tensor) -> torch.Tensor:
    try:
        result = torch.as_tensor(targets, dtype=torch.long).to(outputs.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"targets must be class indices or callables, got {type(targets).__name__}"
        ) from exc
    if result.dim() == 0:  # an int, 0-d tensor or NumPy integer: one class for all
        result = result.expand(n).clone()
    result = result.flatten()
    if len(result) != n:
        raise ValueError(f"got {len(result)} targets for a batch of {n} images")
    num_classes = outputs.shape[1] if outputs.dim() == 2 else None
    if len(result) and (
        int(result.min()) < 0 or (num_classes is not None and int(result.max()) >= num_classes)
    ):
        top = "?" if num_classes is None else num_classes - 1
        raise ValueError(f"target class out of range 0..{top}: {result.tolist()}")
    return result


def _callable_targets(targets: list[Any], n: int, outputs: torch.Tensor) -> TargetSet:
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for a batch of {n} images")
    functions = [t if callable(t) else ClassifierOutputTarget(_index(t)) for t in targets]
    indices = [getattr(f, "category", -1) for f in functions]
    index_tensor = torch.tensor(
        [i if isinstance(i, int) else -1 for i in indices], dtype=torch.long, device=outputs.device
    )
    if all(type(f) is ClassifierOutputTarget for f in functions):
        return TargetSet(_index_targets(index_tensor, n, outputs))  # same semantics, vectorised
    return TargetSet(index_tensor, tuple(functions))


def _index(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a target must be a class index or a callable, got {value!r}") from exc


def output_adapter(output: str | int | Callable[[Any], torch.Tensor] | None = None):
    """A function from the model's raw output to the tensor that targets read.

    Args:
        output: None (a tensor as is; else ``.logits``, ``["logits"]`` or a tuple's first
            element), an index, a key or attribute name, or a callable: see
            `camscope.logits.select_logits`, which this applies. A 1-D (N,) result (a
            regression model) becomes one output column (N, 1).
    """
    from camscope.logits import select_logits

    def adapt(value: Any) -> torch.Tensor:
        logits = select_logits(value, output)
        # a regression model's (N,) output is one output column (N, 1)
        return logits[:, None] if isinstance(logits, torch.Tensor) and logits.dim() == 1 else logits

    return adapt
