"""The tasks a run can do, one `Task` each: classify, detect, segment, prompt.

A run (``camscope run --task NAME``) asks its task, never ``if task == ...``: how to load the
model (`Task.load`), its default layer, which *objects* of an image to explain and their maps
(`Task.explain`), and the scalar score deletion/insertion measure for an object
(`Task.scorer`). An *object* is what one map explains: a detection (detect), a class over its
predicted region (segment), a text prompt (prompt). Classification is the run's own path
(`Task.per_object` False: one map per image, `camscope.run.explainer.BatchExplainer`).

Models on the command line (``--model``): torchvision's detection / segmentation names
(``fasterrcnn_mobilenet_v3_large_fpn``, ``deeplabv3_resnet50`` ...; torchvision's weights, or
``--random-weights``), a Hugging Face folder or ``hf:NAME`` (CLIP), or ``module:function``: a
factory called without arguments returning the model, or a dict with ``model`` and any of
``tokenizer``, ``categories``, ``mean``, ``std``, ``input_size``. `camscope.explain` passes
the module itself (``Task.load(..., made={"model": module, ...})``).

Example::

    >>> from camscope.tasks.registry import get_task
    >>> get_task("detect").label
    'object detection'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from camscope.errors import ModelError, one_line
from camscope.models import LoadedModel

__all__ = [
    "TASKS",
    "TASK_OPTIONS",
    "ObjectInfo",
    "ObjectMaps",
    "Task",
    "TaskModel",
    "TaskParams",
    "TaskRefusal",
    "get_task",
    "score_model",
]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_NORM = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
#: Separator of several prompts in one ``--target`` (``"a cat|a dog"``).
PROMPT_SEPARATOR = "|"


class TaskRefusal(ValueError):
    """An image the task cannot explain (no detection, empty region): one line, failed input."""


@dataclass
class TaskModel(LoadedModel):
    """A `LoadedModel` with what a task needs besides (a CLIP tokenizer)."""

    tokenizer: Any = None

    def to_device(self, device: Any) -> TaskModel:
        """The model moved to ``device`` (this object, for chaining)."""
        self.model.to(device)
        return self


@dataclass(frozen=True)
class TaskParams:
    """The task's settings for a run: threshold, object cap, class / prompts (``--target``).

    `TASK_OPTIONS` are the ones a run sets from its options (a task reads those it declares).
    """

    score_threshold: float = 0.5
    max_objects: int | None = None
    target: Any = None  # segment: a class index or None (every predicted class); prompt: prompts
    iou_threshold: float = 0.5


#: The run options that are `TaskParams` fields (`Task.options` says which a task reads).
TASK_OPTIONS = ("score_threshold", "max_objects")


@dataclass(frozen=True)
class ObjectInfo:
    """One object of an image.

    Attributes:
        key: its identity in the results table (``object`` column): the detection's rank
            ("0", "1", ...), the class name, the prompt.
        label: class index (detection, segmentation) or prompt index.
        name: class name or prompt.
        score: detection confidence, mean class probability over the region, or the prompt's
            probability over the prompts.
        box: (x1, y1, x2, y2) in input pixels (detections), else None.
        region: (H, W) bool region (segmentation), else None.
    """

    key: str
    label: int
    name: str
    score: float
    box: tuple[float, float, float, float] | None = None
    region: torch.Tensor | None = None


@dataclass
class ObjectMaps:
    """One method's maps of an image's K objects (K, H, W) in [0, 1], raw, empty, scores."""

    objects: list[ObjectInfo]
    maps: torch.Tensor
    raw: torch.Tensor
    empty: torch.Tensor
    explained: torch.Tensor  # (K,) the value each map explains (box score, region sum, logit)
    notes: list[str] = field(default_factory=list)


class _ScoreAsLogits(nn.Module):
    """(N, 2) logits whose softmax's column 1 is ``score(model(x))`` (see `score_model`)."""

    def __init__(self, model: nn.Module, score: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.score = model, score

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        s = self.score(self.model(x)).float().clamp(1e-12, 1 - 1e-7)
        return torch.stack([torch.log1p(-s), torch.log(s)], dim=1)


def score_model(model: nn.Module, score: Callable[[Any], torch.Tensor]) -> nn.Module:
    """A module whose class-1 softmax probability is ``score(model(x))`` (N,) in [0, 1].

    The faithfulness metrics read ``softmax(f(x))[target]``; logits ``(log(1 - s), log(s))``
    make that exactly ``s``, so deletion/insertion (target 1) measure any task's score.
    """
    return _ScoreAsLogits(model, score).eval()


@dataclass(frozen=True)
class Task:
    """What a run needs of one task (see the module docstring)."""

    name: str
    label: str
    per_object: bool
    load: Callable[..., LoadedModel] | None = None
    probe: Callable[[LoadedModel, TaskParams], nn.Module] | None = None
    explain: Callable[..., ObjectMaps] | None = None
    scorer: Callable[[LoadedModel, ObjectInfo, TaskParams], nn.Module | None] | None = None
    resolve: Callable[[Any, LoadedModel], Any] | None = None
    measured: str = ""
    options: tuple[str, ...] = ()  # the `TaskParams` fields (run options) this task reads
    several_targets: bool = False  # --target may be given several times (prompts)


# -- model loading ------------------------------------------------------------------------


def _factory(spec: str) -> dict[str, Any]:
    """``module:function`` called with no arguments -> {"model": ..., other keys as given}."""
    module_name, _, attr = spec.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
        made = value()
    except Exception as exc:  # noqa: BLE001 - any failure of the user's factory: one line
        raise ModelError(f"--model {spec}: cannot build the model ({one_line(exc)})") from exc
    made = made if isinstance(made, dict) else {"model": made}
    if not isinstance(made.get("model"), nn.Module):
        raise ModelError(f"--model {spec}: the factory returned no torch.nn.Module")
    return made


def _torchvision(spec: str, random_weights: bool, module: Any) -> dict[str, Any]:
    """A torchvision detection / segmentation model by name, its weights or seeded random ones."""
    import torchvision

    if spec not in torchvision.models.list_models(module=module):
        kind = module.__name__.rsplit(".", 1)[-1]
        raise ModelError(f"--model {spec}: not a torchvision {kind} model (or use module:function)")
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torchvision.models.get_model(spec, weights=None, weights_backbone=None)
        n = _num_classes(model)
        return {"model": model, "categories": [f"class {i}" for i in range(n)], "source": "random"}
    try:
        weights = torchvision.models.get_model_weights(spec).DEFAULT
        model = torchvision.models.get_model(spec, weights=weights)
    except Exception as exc:  # noqa: BLE001 - network / cache / hash failures alike
        raise ModelError(
            f"--model {spec}: torchvision's weights could not be had ({one_line(exc)}); "
            "connect once, or use --random-weights to check the pipeline"
        ) from exc
    cats = list(weights.meta["categories"])
    return {"model": model, "categories": cats, "source": f"torchvision {weights}"}


def _num_classes(model: nn.Module) -> int:
    for name in ("roi_heads.box_predictor.cls_score", "classifier.4", "classifier.low_classifier"):
        module = dict(model.named_modules()).get(name)
        if module is not None:
            return int(getattr(module, "out_features", getattr(module, "out_channels", 91)))
    head = getattr(getattr(model, "head", None), "classification_head", None)
    return int(getattr(head, "num_classes", 91))


def _loaded(spec: str, made: dict[str, Any], norm: tuple, size: tuple[int, int], layer: str):
    model = made["model"].eval()
    n = len(made.get("categories") or [])
    source = made.get("source", f"factory {spec}" if ":" in spec else spec)
    return TaskModel(
        model=model,
        name=spec,
        mean=tuple(made.get("mean", norm[0])),  # type: ignore[arg-type]
        std=tuple(made.get("std", norm[1])),  # type: ignore[arg-type]
        categories=list(made.get("categories") or [f"class {i}" for i in range(n)]),
        default_layer=layer,
        weights_source="random (seed 0; --random-weights)" if source == "random" else source,
        input_size=tuple(int(v) for v in made.get("input_size", size)),  # type: ignore[arg-type]
        tokenizer=made.get("tokenizer"),
    )


def _made(spec: str | None, random_weights: bool, module: Any, made: Any) -> dict[str, Any]:
    """What builds the model: ``made`` (an API caller's module), a factory or a name."""
    if made is not None:
        return dict(made)
    if not spec:
        raise ModelError("--task needs --model: a torchvision model name or module:function")
    from camscope.methods.targets import is_target_spec

    return _factory(spec) if is_target_spec(spec) else _torchvision(spec, random_weights, module)


def _load_detector(
    spec: str | None, *, random_weights: bool, device: Any, made: Any = None
) -> LoadedModel:
    import torchvision.models.detection as tvd

    from camscope.tasks.detection import default_detection_layer, detector_categories

    made = _made(spec, random_weights, tvd, made)
    model = made["model"]
    transform = getattr(model, "transform", None)
    fixed = getattr(transform, "fixed_size", None)
    side = int(getattr(transform, "min_size", (640,))[0]) if transform is not None else 640
    size = tuple(fixed) if fixed else (side, side)
    made.setdefault("categories", detector_categories(model))
    norm = UNIT if transform is not None else IMAGENET  # torchvision normalises inside
    return _loaded(str(spec), made, norm, size, default_detection_layer(model)).to_device(device)


def _load_segmenter(
    spec: str | None, *, random_weights: bool, device: Any, made: Any = None
) -> LoadedModel:
    import torchvision.models.segmentation as tvs

    from camscope.tasks.segmentation import default_segmentation_layer, segmentation_model

    made = _made(spec, random_weights, tvs, made)
    model = made["model"]
    config = getattr(model, "config", None)
    if "categories" not in made and getattr(config, "id2label", None):
        made["categories"] = [str(config.id2label[i]) for i in range(len(config.id2label))]
    layer = default_segmentation_layer(model)
    loaded = _loaded(str(spec), made, IMAGENET, (520, 520), layer)
    if not loaded.categories:  # the class count from one dry pass
        with torch.no_grad():
            n = segmentation_model(model)(torch.zeros(1, 3, *loaded.input_size)).shape[1]
        loaded.categories = [f"class {i}" for i in range(n)]
    return loaded.to_device(device)


def _load_clip(
    spec: str | None, *, random_weights: bool, device: Any, made: Any = None
) -> LoadedModel:
    from camscope.methods.targets import is_target_spec
    from camscope.tasks.prompts import default_prompt_layer

    if made is None and not spec:
        raise ModelError("--task prompt needs --model: a CLIP folder, hf:NAME or module:function")
    if made is None:
        made = _factory(spec) if is_target_spec(spec) else _hf_clip(spec, random_weights)
    model = made["model"]
    config = getattr(model, "config", None)
    side = getattr(getattr(config, "vision_config", None), "image_size", None)
    if side is None:
        side = getattr(getattr(model, "visual", None), "image_size", 224)
    side = side[0] if isinstance(side, (tuple, list)) else side
    return _loaded(
        spec, made, CLIP_NORM, (int(side), int(side)), default_prompt_layer(model)
    ).to_device(device)


def _hf_clip(spec: str, random_weights: bool) -> dict[str, Any]:
    """A Hugging Face CLIPModel from a local folder or the local cache (never downloaded)."""
    from camscope.adapters.hf import HFError, import_transformers

    try:
        transformers = import_transformers()
    except HFError as exc:
        raise ModelError(str(exc)) from exc
    name = spec[3:] if spec.startswith("hf:") else spec
    try:
        if random_weights:
            config = transformers.CLIPConfig.from_pretrained(name, local_files_only=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = transformers.CLIPModel(config)
        else:
            model = transformers.CLIPModel.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"--model {spec}: cannot load a CLIP model ({one_line(exc)})") from exc
    source = "random" if random_weights else f"transformers {name}"
    return {"model": model, "source": source}


# -- detection ----------------------------------------------------------------------------


def _detect_explain(
    loaded: LoadedModel, x: torch.Tensor, method: str, layer: str, options: dict,
    params: TaskParams, objects: list[ObjectInfo] | None = None,
) -> ObjectMaps:  # fmt: skip
    from camscope.tasks.detection import NoDetectionsError, explain_detections

    given = {} if objects is None else {
        "boxes": [o.box for o in objects], "labels": [o.label for o in objects],
    }  # fmt: skip
    try:
        r = explain_detections(
            loaded.model, x, method=method, layer=layer, categories=loaded.categories,
            score_threshold=params.score_threshold, max_objects=params.max_objects,
            iou_threshold=params.iou_threshold, **given, **options,
        )  # fmt: skip
    except NoDetectionsError as exc:
        raise TaskRefusal(str(exc)) from None
    found = objects or [
        ObjectInfo(str(k), d.label, d.name, d.score, d.box) for k, d in enumerate(r.detections)
    ]
    return ObjectMaps(found, r.maps, r.raw, r.empty, r.scores, r.notes)


def _detect_probe(loaded: LoadedModel, params: TaskParams) -> nn.Module:
    from camscope.tasks.detection import box_scores

    return box_scores(loaded.model, [[0.0, 0.0, 1.0, 1.0]], [0], params.iou_threshold)


def _detect_scorer(loaded: LoadedModel, obj: ObjectInfo, params: TaskParams) -> nn.Module:
    from camscope.tasks.detection import box_scores

    boxes = box_scores(loaded.model, [obj.box], [obj.label], params.iou_threshold)
    return score_model(boxes, lambda s: s[:, 0] / 2)  # IoU + confidence, in [0, 2]


# -- segmentation -------------------------------------------------------------------------


def _segment_objects(model: nn.Module, x: torch.Tensor, params: TaskParams, cats: list[str]):
    """The class asked for over its predicted region, or every predicted class (largest first)."""
    with torch.no_grad():
        probs = model(x)[0].float().softmax(dim=0)
    predicted = probs.argmax(dim=0)
    wanted = [params.target] if params.target is not None else None
    if wanted is None:
        counts = torch.bincount(predicted.flatten(), minlength=probs.shape[0])
        wanted = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
    found = []
    for c in wanted[: params.max_objects]:
        region = predicted == c
        if not region.any():
            raise TaskRefusal(
                f"class {cats[c]} is predicted nowhere in the image: no region to explain"
            )
        score = float(probs[c][region].mean())
        found.append(ObjectInfo(cats[c], c, cats[c], score, None, region))
    return found


def _segment_explain(
    loaded: LoadedModel, x: torch.Tensor, method: str, layer: str, options: dict,
    params: TaskParams, objects: list[ObjectInfo] | None = None,
) -> ObjectMaps:  # fmt: skip
    from camscope.tasks.segmentation import explain_segmentation, segmentation_model

    if objects is None:
        objects = _segment_objects(segmentation_model(loaded.model), x, params, loaded.categories)
    results = [
        explain_segmentation(
            loaded.model, x, o.label, region=o.region, method=method, layer=layer, **options
        )
        for o in objects
    ]
    return ObjectMaps(
        objects,
        torch.stack([r.map for r in results]),
        torch.stack([r.raw for r in results]),
        torch.tensor([r.empty for r in results]),
        torch.tensor([r.score for r in results]),
        [n for r in results for n in r.notes],
    )


def _segment_probe(loaded: LoadedModel, params: TaskParams) -> nn.Module:
    from camscope.tasks.segmentation import segmentation_model

    return segmentation_model(loaded.model)


def _segment_scorer(loaded: LoadedModel, obj: ObjectInfo, params: TaskParams) -> nn.Module:
    from camscope.tasks.segmentation import segmentation_model

    region = obj.region

    def mean_probability(scores: torch.Tensor) -> torch.Tensor:
        probs = scores.float().softmax(dim=1)[:, obj.label]
        mask = region.to(probs.device)
        return (probs * mask).flatten(1).sum(1) / mask.sum()

    return score_model(segmentation_model(loaded.model), mean_probability)


def _segment_resolve(target: Any, loaded: LoadedModel) -> int | None:
    from camscope.classes import parse_target

    return None if target is None else parse_target(str(target), loaded.categories)


# -- prompts ------------------------------------------------------------------------------


def _prompts_of(target: Any) -> tuple[str, ...]:
    if isinstance(target, (list, tuple)):
        return tuple(target)
    parts = [p.strip() for p in str(target or "").split(PROMPT_SEPARATOR)]
    return tuple(p for p in parts if p)


def _prompt_resolve(target: Any, loaded: LoadedModel) -> tuple[str, ...]:
    from camscope.classes import TargetError

    prompts = _prompts_of(target)
    twice = sorted({p for p in prompts if prompts.count(p) > 1})
    if twice:
        raise TargetError(f"--target: the prompt {twice[0]!r} is given twice")
    if not prompts:
        raise TargetError(
            f'--task prompt needs --target "a photo of a cat" (several: separated by '
            f"{PROMPT_SEPARATOR})"
        )
    return prompts


def _prompt_explain(
    loaded: LoadedModel, x: torch.Tensor, method: str, layer: str, options: dict,
    params: TaskParams, objects: list[ObjectInfo] | None = None,
) -> ObjectMaps:  # fmt: skip
    from camscope.tasks.prompts import explain_prompts

    prompts = list(params.target)
    r = explain_prompts(
        loaded.model, x, prompts, tokenizer=getattr(loaded, "tokenizer", None), method=method,
        layer=layer, **options,
    )  # fmt: skip
    found = objects or [ObjectInfo(p, k, p, float(r.probs[k])) for k, p in enumerate(prompts)]
    return ObjectMaps(found, r.maps, r.raw, r.empty, r.logits.detach(), r.notes)


def _prompt_probe(loaded: LoadedModel, params: TaskParams) -> nn.Module:
    from camscope.tasks.prompts import prompt_classifier

    return prompt_classifier(loaded.model, list(params.target), getattr(loaded, "tokenizer", None))


def _prompt_scorer(loaded: LoadedModel, obj: ObjectInfo, params: TaskParams) -> nn.Module | None:
    if len(params.target) < 2:
        return None  # the probability over one prompt is 1 whatever the image
    return score_model(_prompt_probe(loaded, params), lambda s: s.float().softmax(1)[:, obj.label])


#: Every task, by name (``--task`` choices).
TASKS: dict[str, Task] = {
    "classify": Task("classify", "image classification", per_object=False),
    "detect": Task(
        "detect", "object detection", True, _load_detector, _detect_probe,
        _detect_explain, _detect_scorer, None,
        "the box score (IoU with the object's box + confidence of the matching detection) / 2",
        ("score_threshold", "max_objects"),
    ),
    "segment": Task(
        "segment", "semantic segmentation", True, _load_segmenter, _segment_probe,
        _segment_explain, _segment_scorer, _segment_resolve,
        "the class's mean probability over its predicted region",
        ("max_objects",),
    ),
    "prompt": Task(
        "prompt", "CLIP text prompts", True, _load_clip, _prompt_probe,
        _prompt_explain, _prompt_scorer, _prompt_resolve,
        "the prompt's probability over the prompts (softmax of CLIP's similarities)",
        several_targets=True,
    ),
}  # fmt: skip


def get_task(name: str) -> Task:
    """The task ``name`` (ValueError, one line, listing the tasks)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; choose from {', '.join(TASKS)}") from None
