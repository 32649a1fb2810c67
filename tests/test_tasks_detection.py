"""Detectors: one map per object, box-score targets, pytorch-grad-cam's recipe, refusals.

torchvision detectors with ``weights=None, weights_backbone=None`` (3 classes, so random
weights still detect something) and a tiny Hugging Face DETR; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models.detection as tvd

from camscope.tasks.detection import (
    NoDetectionsError,
    UnmatchedBoxError,
    _valid_region,
    box_scores,
    default_detection_layer,
    detect,
    detector_module,
    explain_detections,
    predictions,
)

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"weights": None, "weights_backbone": None, "num_classes": 3}


def _build(kind: str):
    torch.manual_seed(0)
    if kind == "fasterrcnn":
        return tvd.fasterrcnn_resnet50_fpn(min_size=96, max_size=128, **SMALL).eval()
    if kind == "fasterrcnn_mobilenet":
        return tvd.fasterrcnn_mobilenet_v3_large_fpn(min_size=96, max_size=128, **SMALL).eval()
    if kind == "maskrcnn":
        return tvd.maskrcnn_resnet50_fpn(min_size=64, max_size=96, **SMALL).eval()
    if kind == "retinanet":
        return tvd.retinanet_resnet50_fpn(
            min_size=96, max_size=128, score_thresh=0.001, **SMALL
        ).eval()
    if kind == "fcos":
        return tvd.fcos_resnet50_fpn(min_size=96, max_size=128, score_thresh=0.001, **SMALL).eval()
    if kind == "ssd":
        return tvd.ssd300_vgg16(**SMALL).eval()
    raise ValueError(kind)


def _image(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize(
    ("kind", "layer"),
    [
        ("fasterrcnn_mobilenet", "backbone.body.16"),
        ("retinanet", "backbone.body.layer4"),
        ("fcos", "backbone.body.layer4"),
        ("ssd", "backbone.features"),
        ("maskrcnn", "backbone.body.layer4"),
    ],
)
def test_one_map_per_object(kind, layer):
    model = _build(kind)
    image = _image(90, 120)
    method = "eigencam" if kind in ("ssd", "maskrcnn") else "gradcam"
    result = explain_detections(model, image, method=method, score_threshold=0.0, max_objects=2)
    assert result.layer == layer == default_detection_layer(model)
    assert result.maps.shape == (2, 90, 120) and len(result.detections) == 2
    assert not result.empty.any()
    found = [d for d in detect(model, image, 0.0) if d.box[2] > d.box[0] and d.box[3] > d.box[1]]
    found = found[:2]
    for got, want in zip(result.detections, found, strict=True):  # boxes in input pixels
        assert got.label == want.label and got.score == pytest.approx(want.score)
        assert np.allclose(got.box, want.box, atol=1e-3)
    # each object's own detection matches itself: IoU 1 + its confidence
    assert torch.allclose(result.scores, torch.tensor([1 + d.score for d in found]), atol=1e-4)


def test_box_score_against_a_loop_and_pytorch_grad_cam():
    pgc_targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = _build("fasterrcnn_mobilenet")
    x = _image()[None]
    with torch.no_grad():
        pred = model(x)[0]
    refs, labels = pred["boxes"][:3], pred["labels"][:3].tolist()
    with torch.no_grad():
        scores = box_scores(model, refs, labels)(x)[0]
    for k in range(3):  # brute force: every detection of the class, best IoU above 0.5
        best = max(
            (
                (float(_iou(refs[k], b)), float(s))
                for b, lab, s in zip(pred["boxes"], pred["labels"], pred["scores"], strict=True)
                if int(lab) == labels[k]
            ),
        )
        assert float(scores[k]) == pytest.approx(best[0] + best[1], abs=1e-5)
        theirs = pgc_targets.FasterRCNNBoxScoreTarget([labels[k]], refs[k : k + 1])(pred)
        assert float(scores[k]) == pytest.approx(float(theirs), abs=1e-5)


def _iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    area = lambda r: float((r[2] - r[0]) * (r[3] - r[1]))  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_equals_pytorch_grad_cam_faster_rcnn_recipe(method):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    model = _build("fasterrcnn")
    image = _image()  # 96x128: resized by 1, no padding, so no cut either
    assert _valid_region(model, image[None]) == (1.0, 1.0)
    ours = explain_detections(model, image, method=method, score_threshold=0.0, max_objects=2)
    cls = {"gradcam": pgc.GradCAM, "eigencam": pgc.EigenCAM}[method]
    for k, obj in enumerate(ours.detections):
        target = FasterRCNNBoxScoreTarget([obj.label], torch.tensor([obj.box]))
        with cls(model, [model.backbone.body.layer4]) as cam:
            theirs = cam(image[None], targets=[target])[0]
        assert _pearson(ours.maps[k], theirs) >= 0.999, k


def test_padding_is_cut_from_the_map():
    model = _build("fasterrcnn_mobilenet")
    image = _image(96, 100)  # resized by 1, padded to 96x128 by the detector
    assert _valid_region(model, image[None]) == (1.0, 100 / 128)
    result = explain_detections(model, image, method="eigencam", score_threshold=0.0, max_objects=1)
    assert result.maps.shape == (1, 96, 100) and not result.empty.any()


def test_given_boxes_and_no_detections_refused():
    model = _build("fasterrcnn_mobilenet")
    image = _image()
    with pytest.raises(NoDetectionsError, match=r"no detection scores >= 1\.01"):
        explain_detections(model, image, score_threshold=1.01)
    top = detect(model, image, 0.0)[0]
    result = explain_detections(model, image, boxes=[top.box], labels=[top.label], method="gradcam")
    assert result.scores[0] == pytest.approx(1 + top.score, abs=1e-4)
    assert np.isnan(result.detections[0].score)  # a given box has no confidence of its own
    with pytest.raises(UnmatchedBoxError, match="box score is 0"):
        explain_detections(model, image, boxes=[[0, 0, 1, 1]], labels=[top.label])


def test_hf_detr():
    transformers = pytest.importorskip("transformers")
    backbone = transformers.ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 48, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage4"],
    )
    config = transformers.DetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.DetrForObjectDetection(config).eval()
    image = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = predictions(model, model(image[None]), (64, 96))[0]
    assert pred["boxes"].shape == (10, 4) and float(pred["scores"].max()) <= 1
    result = explain_detections(model, image, score_threshold=0.0, max_objects=2)
    assert result.layer == "model.backbone.model.encoder.stages.3"
    assert result.maps.shape == (2, 64, 96) and not result.empty.any()


def test_ultralytics_yolo_from_its_yaml():
    ultralytics = pytest.importorskip("ultralytics")
    torch.manual_seed(0)
    yolo = ultralytics.YOLO("yolov8n.yaml")  # built from the package's YAML: no download
    image = _image(96, 128)
    result = explain_detections(yolo, image, method="gradcam", score_threshold=0.0, max_objects=1)
    assert result.layer == "model.21"  # the layer before the Detect head
    assert result.maps.shape == (1, 96, 128) and not result.empty.any()
    assert result.detections[0].name == yolo.model.names[result.detections[0].label]
    assert float(result.scores[0]) == pytest.approx(1 + result.detections[0].score, abs=1e-4)


def test_ultralytics_detection_model_is_the_network():
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.manual_seed(0)
    model = tasks.DetectionModel("yolov8n.yaml", verbose=False).eval()  # no download
    assert detector_module(model) is model
    image = _image(96, 128)
    result = explain_detections(model, image, method="gradcam", score_threshold=0.0, max_objects=1)
    assert result.layer == "model.21"
    assert result.maps.shape == (1, 96, 128) and not result.empty.any()
    assert result.detections[0].name == model.names[result.detections[0].label]
