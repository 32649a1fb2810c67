"""Speed per task and model: camscope's task API against pytorch-grad-cam's recipe, one thread.

For each model (random weights: timing does not depend on them) camscope's call and
pytorch-grad-cam 1.5.7's recipe for the same result on the same model and input are timed in
one process, interleaved A-B / B-A (after one warm-up call of each), so drifting load on a
shared machine hits both alike. Times are CPU seconds of this process (``time.process_time``)
with one torch thread: compute, not waiting. Printed: the median of each, and the ratio
camscope / pytorch-grad-cam of the medians (below 1: camscope is faster).

What a call does (both sides produce the same maps; tests/test_tasks_*.py check r >= 0.999):

* classify: one Grad-CAM map of one class (the CAM objects built once, reused);
* detect: the detector's forward pass for its detections, then one map per object (the first
  ``--objects``, score threshold 0) with pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``
  (torchvision's output format; DETR through a wrapper returning it); EigenCAM: one map per
  image; YOLO: camscope only for Grad-CAM (pytorch-grad-cam has no YOLOv8 gradient recipe),
  EigenCAM against its YOLO EigenCAM recipe;
* segment: the forward pass for the predicted region of the most frequent class, then one map
  for that class over that region (``SemanticSegmentationTarget``);
* prompts: one map per text prompt (3 prompts), CLIP's image-text logits as the classifier
  (pytorch-grad-cam's CLIP tutorial wrapper, one call per prompt).

    OMP_NUM_THREADS=1 python benchmarks/bench_tasks.py --rounds 3 --objects 2
    OMP_NUM_THREADS=1 python benchmarks/bench_tasks.py --only detect,segment
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

warnings.filterwarnings("ignore")


@dataclass
class Case:
    """One row: camscope's call and pytorch-grad-cam's recipe (None: it has none)."""

    task: str
    model: str
    method: str
    ours: Callable[[], object]
    theirs: Callable[[], object] | None


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def interleaved(case: Case, rounds: int) -> tuple[float, float | None]:
    """Median CPU seconds of camscope and of the recipe, A-B then B-A, after warm-ups."""
    calls = [case.ours] + ([case.theirs] if case.theirs is not None else [])
    for fn in calls:
        fn()
    times: list[list[float]] = [[] for _ in calls]
    for r in range(rounds):
        order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            times[i].append(_cpu(calls[i]))
    medians = [statistics.median(t) for t in times]
    return medians[0], (medians[1] if len(medians) > 1 else None)


class _Select(nn.Module):
    """pytorch-grad-cam's model wrappers: the output the recipe's target reads."""

    def __init__(self, model: nn.Module, pick: Callable) -> None:
        super().__init__()
        self.model, self.pick = model, pick

    def forward(self, x: torch.Tensor):
        return self.pick(self.model, x)


def _tokens_to_map(prefix: int, h: int, w: int) -> Callable:
    return lambda t: t[:, prefix:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return build().eval()


# --------------------------------------------------------------------------------------------
# classify
# --------------------------------------------------------------------------------------------


def classify(args: argparse.Namespace) -> Iterator[Case]:
    import pytorch_grad_cam as pgc
    import transformers as T
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from camscope import GradCAM

    x = torch.randn(1, 3, 224, 224)
    vit = _seeded(lambda: T.ViTForImageClassification(T.ViTConfig(num_labels=1000)))
    swin = _seeded(lambda: T.SwinForImageClassification(T.SwinConfig(num_labels=1000)))
    logits = lambda m, x: m(x).logits  # noqa: E731 - HuggingfaceToTensorModelWrapper
    for name, model, layer, reshape in (
        ("HF ViT-B/16, 224", vit, vit.vit.layers[-1].layernorm_before, _tokens_to_map(1, 14, 14)),
        ("HF Swin-T, 224", swin, swin.swin.layernorm, _tokens_to_map(0, 7, 7)),
    ):
        ours = GradCAM(model, target_layers=None)
        theirs = pgc.GradCAM(_Select(model, logits), [layer], reshape_transform=reshape)
        target = [ClassifierOutputTarget(3)]
        yield Case(
            "classify",
            name,
            "gradcam",
            lambda o=ours: o(x, targets=[3]),
            lambda t=theirs, g=target: t(x, targets=g),
        )


# --------------------------------------------------------------------------------------------
# detect
# --------------------------------------------------------------------------------------------


def _pgc_boxes(cls, model: nn.Module, layer: nn.Module, image: torch.Tensor, objects, given=None):
    """pytorch-grad-cam's Faster R-CNN recipe: detections, then one box-score map each.

    ``given``: (boxes, labels) to explain instead of the detections (no detection pass).
    """
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    def run() -> None:
        if given is None:
            with torch.no_grad():
                pred = model(image[None])[0]
            boxes, labels = pred["boxes"][:objects], pred["labels"][:objects].tolist()
        else:
            boxes, labels = given
        with cls(model, [layer]) as cam:
            if getattr(cls, "__name__", "") == "EigenCAM":  # gradient-free: one map per image
                cam(image[None], targets=[FasterRCNNBoxScoreTarget(labels, boxes)])
                return
            for box, label in zip(boxes, labels, strict=True):
                cam(image[None], targets=[FasterRCNNBoxScoreTarget([label], box[None])])

    return run


def _matchable(model: nn.Module, image: torch.Tensor, objects: int) -> tuple:
    """The best detections pytorch-grad-cam's box target can score (its IoU argmax over all
    classes finds the first detection with the same box: one reported under two classes
    earlier scores 0, and its backward fails)."""
    with torch.no_grad():
        pred = model(image[None])[0]
    keep = []
    for i, box in enumerate(pred["boxes"]):
        first = int((pred["boxes"] == box).all(1).nonzero()[0])
        if first == i and box[2] > box[0] and box[3] > box[1] and len(keep) < objects:
            keep.append(i)
    return pred["boxes"][keep], pred["labels"][keep].tolist()


def _given_boxes(name: str, model: nn.Module, image: torch.Tensor, objects: int) -> Case:
    import pytorch_grad_cam as pgc

    from camscope.tasks.detection import explain_detections

    boxes, labels = _matchable(model, image, objects)
    side = image.shape[-1]
    return Case(
        "detect",
        f"{name}, {side}x{side}, {len(labels)} given boxes (ones pytorch-grad-cam can score)",
        "gradcam",
        lambda: explain_detections(model, image, boxes=boxes.tolist(), labels=labels),
        _pgc_boxes(pgc.GradCAM, model, model.backbone.body.layer4, image, objects, (boxes, labels)),
    )


def torchvision_detectors(args: argparse.Namespace) -> Iterator[Case]:
    import pytorch_grad_cam as pgc
    import torchvision.models.detection as tvd

    from camscope.tasks.detection import explain_detections

    side = args.detect_size
    image = torch.rand(3, side, side, generator=torch.Generator().manual_seed(0))
    small = {"weights": None, "weights_backbone": None, "num_classes": 91}
    small |= {"min_size": side, "max_size": side}
    for name, build, methods in (
        ("Faster R-CNN R50-FPN", tvd.fasterrcnn_resnet50_fpn, ("gradcam", "eigencam")),
        ("RetinaNet R50-FPN", tvd.retinanet_resnet50_fpn, ("gradcam",)),
        ("FCOS R50-FPN", tvd.fcos_resnet50_fpn, ("gradcam",)),
    ):
        extra = {} if "Faster" in name else {"score_thresh": 0.0}
        model = _seeded(lambda b=build, e=extra: b(**small, **e))
        for method in methods:
            cls = {"gradcam": pgc.GradCAM, "eigencam": pgc.EigenCAM}[method]
            yield Case(
                "detect",
                f"{name}, {side}x{side}, {args.objects} objects",
                method,
                lambda m=model, k=method: explain_detections(
                    m, image, method=k, score_threshold=0.0, max_objects=args.objects
                ),
                _pgc_boxes(cls, model, model.backbone.body.layer4, image, args.objects),
            )
        if "Faster" not in name:  # one box under two classes: pgc's target may score 0
            yield _given_boxes(name, model, image, args.objects)


def _detr_as_torchvision(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """A user's DETR wrapper for pytorch-grad-cam's box target: torchvision's output format."""
    # HF DETR freezes its backbone (requires_grad False): without an input that requires
    # grad, pytorch-grad-cam's hook at the backbone gets no gradient (grads None, a crash)
    out = model(pixel_values=x.detach().requires_grad_(True))
    scores, labels = out.logits.softmax(-1)[..., :-1].max(-1)
    cx, cy, w, h = out.pred_boxes.unbind(-1)
    height, width = x.shape[-2:]
    boxes = torch.stack(
        [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height],
        -1,
    )
    rows = zip(boxes, labels, scores, strict=True)
    return [{"boxes": b, "labels": lab, "scores": s} for b, lab, s in rows]


def detr(args: argparse.Namespace) -> Iterator[Case]:
    import pytorch_grad_cam as pgc
    import transformers as T

    from camscope.tasks.detection import explain_detections

    backbone = T.ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1]
    )
    backbone.out_features = ["stage4"]
    config = T.DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_queries=20,
        num_labels=91,
    )
    model = _seeded(lambda: T.DetrForObjectDetection(config))
    image = torch.rand(3, 256, 320, generator=torch.Generator().manual_seed(0))
    wrapper = _Select(model, _detr_as_torchvision).eval()
    layer = model.model.backbone.model.encoder.stages[3]
    yield Case(
        "detect",
        f"HF DETR, tiny config (ResNet 4x1 blocks, d_model 64), 256x320, {args.objects} objects",
        "gradcam",
        lambda: explain_detections(model, image, score_threshold=0.0, max_objects=args.objects),
        _pgc_boxes(pgc.GradCAM, wrapper, layer, image, args.objects),
    )


def yolo(args: argparse.Namespace) -> Iterator[Case]:
    import pytorch_grad_cam as pgc
    import ultralytics

    from camscope.tasks.detection import explain_detections

    torch.manual_seed(0)
    model = ultralytics.YOLO("yolov8n.yaml")  # built from its YAML: no download
    net = model.model.eval()
    image = torch.rand(3, 256, 320, generator=torch.Generator().manual_seed(0))
    label = f"YOLOv8n (ultralytics YAML), 256x320, {args.objects} objects"
    yield Case(
        "detect",
        label,
        "gradcam",
        lambda: explain_detections(
            model, image, method="gradcam", score_threshold=0.0, max_objects=args.objects
        ),
        None,
    )
    wrapper = _Select(net, lambda m, x: m(x)[0]).eval()  # pgc's YOLO EigenCAM: the head's tensor

    def theirs() -> None:
        with pgc.EigenCAM(wrapper, [net.model[-2]]) as cam:
            cam(image[None], targets=[lambda out: out.sum()])

    yield Case(
        "detect",
        label,
        "eigencam",
        lambda: explain_detections(
            model, image, method="eigencam", score_threshold=0.0, max_objects=args.objects
        ),
        theirs,
    )


# --------------------------------------------------------------------------------------------
# segment
# --------------------------------------------------------------------------------------------


def _pgc_segment(model: nn.Module, layer: nn.Module, pixels: Callable, image, reshape=None):
    """pytorch-grad-cam's segmentation recipe: predicted mask, then one class map over it."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    wrapper = _Select(model, pixels).eval()

    def run() -> None:
        with torch.no_grad():
            pred = wrapper(image[None])[0].argmax(0)
        category = int(pred.flatten().mode().values)
        mask = (pred == category).float().numpy()
        with GradCAM(wrapper, [layer], reshape_transform=reshape) as cam:
            cam(image[None], targets=[SemanticSegmentationTarget(category, mask)])

    return run


def _most_frequent_class(model: nn.Module, image: torch.Tensor) -> int:
    from camscope.tasks.segmentation import segmentation_model

    with torch.no_grad():
        scores = segmentation_model(model)(image[None])[0]
    return int(scores.argmax(0).flatten().mode().values)


def segment(args: argparse.Namespace) -> Iterator[Case]:
    import torchvision.models.segmentation as tvs

    from camscope.tasks.segmentation import explain_segmentation

    side = args.segment_size
    image = torch.randn(3, side, side, generator=torch.Generator().manual_seed(0))
    small = {"weights": None, "weights_backbone": None, "num_classes": 21}
    out = lambda m, x: m(x)["out"]  # noqa: E731 - SegmentationModelOutputWrapper
    for name, build, layer in (
        ("FCN-R50", lambda: tvs.fcn_resnet50(aux_loss=False, **small), "layer4"),
        ("DeepLabV3-R50", lambda: tvs.deeplabv3_resnet50(aux_loss=False, **small), "layer4"),
        ("LR-ASPP MobileNetV3-L", lambda: tvs.lraspp_mobilenet_v3_large(**small), "16"),
    ):
        model = _seeded(build)
        category = _most_frequent_class(model, image)  # the API takes the class, finds its region
        yield Case(
            "segment",
            f"{name}, {side}x{side}",
            "gradcam",
            lambda m=model, c=category: explain_segmentation(m, image, c),
            _pgc_segment(model, getattr(model.backbone, layer), out, image),
        )
    yield from _segformer()


def _segformer() -> Iterator[Case]:
    import transformers as T

    from camscope.tasks.segmentation import explain_segmentation

    config = T.SegformerConfig(  # MiT-b0's widths, one block per stage
        depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 160, 256], decoder_hidden_size=256
    )
    config.num_labels = 21
    model = _seeded(lambda: T.SegformerForSemanticSegmentation(config))
    image = torch.randn(3, 256, 256, generator=torch.Generator().manual_seed(0))

    def pixels(m: nn.Module, x: torch.Tensor) -> torch.Tensor:  # logits at 1/4: upsampled
        return F.interpolate(m(x).logits, size=x.shape[-2:], mode="bilinear")

    layer = model.segformer.stages[-1].layer_norm  # the last stage's tokens, 8x8 at 256
    category = _most_frequent_class(model, image)
    yield Case(
        "segment",
        "HF SegFormer, MiT-b0 widths 1 block per stage, 256x256",
        "gradcam",
        lambda: explain_segmentation(model, image, category, layer="segformer.stages.3.layer_norm"),
        _pgc_segment(model, layer, pixels, image, _tokens_to_map(0, 8, 8)),
    )


# --------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------

PROMPTS = ["a photo of a cat", "a photo of a dog", "a diagram"]


def _fake_tokenizer(prompts, padding=True, return_tensors="pt"):
    """Token ids without vocabulary files (random weights: any ids time the same)."""
    ids = torch.tensor([[49406] + [400 + i] * 6 + [49407] for i in range(len(prompts))])
    return {"input_ids": ids}


def _pgc_prompts(wrapper: nn.Module, layer: nn.Module, image, reshape) -> Callable[[], None]:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run() -> None:
        with GradCAM(wrapper, [layer], reshape_transform=reshape) as cam:
            for p in range(len(PROMPTS)):
                cam(image[None], targets=[ClassifierOutputTarget(p)])

    return run


def prompts(args: argparse.Namespace) -> Iterator[Case]:
    import transformers as T

    from camscope.tasks.prompts import explain_prompts

    image = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    hf = _seeded(lambda: T.CLIPModel(T.CLIPConfig(vision_config={"patch_size": 32})))
    text = _fake_tokenizer(PROMPTS)
    wrapper = _Select(hf, lambda m, x: m(pixel_values=x, **text).logits_per_image).eval()
    yield Case(
        "prompts",
        "HF CLIP ViT-B/32, 224, 3 prompts",
        "gradcam",
        lambda: explain_prompts(hf, image, PROMPTS, tokenizer=_fake_tokenizer),
        _pgc_prompts(
            wrapper,
            hf.vision_model.encoder.layers[-1].layer_norm1,
            image,
            _tokens_to_map(1, 7, 7),
        ),
    )
    yield from _open_clip(image)


def _open_clip(image: torch.Tensor) -> Iterator[Case]:
    import open_clip

    from camscope.tasks.prompts import explain_prompts

    model = _seeded(lambda: open_clip.create_model("ViT-B-32", pretrained=None))
    tokens = open_clip.tokenize(PROMPTS)

    def similarity(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        img = F.normalize(m.encode_image(x), dim=-1)
        txt = F.normalize(m.encode_text(tokens), dim=-1)
        return m.logit_scale.exp() * img @ txt.T

    yield Case(
        "prompts",
        "open-clip ViT-B-32, 224, 3 prompts",
        "gradcam",
        lambda: explain_prompts(model, image, PROMPTS),
        _pgc_prompts(
            _Select(model, similarity).eval(),
            model.visual.transformer.resblocks[-1].ln_1,
            image,
            _tokens_to_map(1, 7, 7),
        ),
    )


FAMILIES = {
    "classify": (classify,),
    "detect": (torchvision_detectors, detr, yolo),
    "segment": (segment,),
    "prompts": (prompts,),
}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


class _Once(logging.Filter):
    """camscope's log lines (e.g. the fx-split fallback), each said once, not per call."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        new = record.getMessage() not in self.seen
        self.seen.add(record.getMessage())
        return new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each (A-B, B-A..)")
    parser.add_argument("--objects", type=int, default=2, help="objects explained per image")
    parser.add_argument("--detect-size", type=int, default=256)
    parser.add_argument("--segment-size", type=int, default=192)
    parser.add_argument(
        "--only",
        default=",".join(FAMILIES),
        help="tasks or family functions (e.g. detr), comma-separated",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("camscope").addFilter(_Once())
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {_machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print("| task | model, input | method | camscope s | pytorch-grad-cam s | ratio | load |")
    print("| --- | --- | --- | --- | --- | --- | --- |", flush=True)
    chosen = args.only.split(",")
    for task, families in FAMILIES.items():
        for family in families:
            if task not in chosen and family.__name__ not in chosen:
                continue
            for row in _rows(family, args):
                print("| " + " | ".join(row) + " |", flush=True)
            gc.collect()


def _rows(family: Callable, args: argparse.Namespace) -> Iterator[list[str]]:
    """One table row per case, each timed as soon as it is built (one model in memory)."""
    cases = family(args)
    while True:
        try:
            case = next(cases)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a family that cannot be built here
            yield [family.__name__, f"not run: {str(exc).splitlines()[0][:120]}", *"-----"]
            return
        try:
            ours, theirs = interleaved(case, args.rounds)
        except Exception as exc:  # noqa: BLE001 - say it in the table, go on
            yield [case.task, case.model, case.method, f"failed: {str(exc)[:120]}", *"---"]
            continue
        yield [
            case.task,
            case.model,
            case.method,
            f"{ours:.2f}",
            f"{theirs:.2f}" if theirs is not None else "-",
            f"{ours / theirs:.2f}" if theirs else "-",
            f"{os.getloadavg()[0]:.1f}",
        ]


if __name__ == "__main__":
    main()
