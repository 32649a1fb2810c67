"""Semantic segmentation: a class over its predicted region or a given one; pytorch-grad-cam.

torchvision FCN / DeepLabV3 / LR-ASPP with ``weights=None, weights_backbone=None`` (3 classes)
and a tiny Hugging Face SegFormer; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models.segmentation as tvs

from camscope.tasks.segmentation import (
    EmptyRegionError,
    default_segmentation_layer,
    explain_segmentation,
    region_mask,
    segmentation_model,
)

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"weights": None, "weights_backbone": None, "num_classes": 3}


def _build(kind: str):
    torch.manual_seed(0)
    if kind == "fcn":
        return tvs.fcn_resnet50(aux_loss=False, **SMALL).eval()
    if kind == "deeplabv3":
        return tvs.deeplabv3_resnet50(aux_loss=False, **SMALL).eval()
    if kind == "lraspp":
        return tvs.lraspp_mobilenet_v3_large(**SMALL).eval()
    raise ValueError(kind)


def _image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))


def _pearson(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _predicted_class(model, image) -> int:
    with torch.no_grad():
        scores = segmentation_model(model)(image[None])[0]
    return int(scores.argmax(0).flatten().mode().values)


@pytest.mark.parametrize(("kind", "layer"), [("fcn", "backbone.layer4"), ("lraspp", "backbone.16")])
def test_predicted_region(kind, layer):
    model = _build(kind)
    image = _image()
    category = _predicted_class(model, image)
    result = explain_segmentation(model, image, category)
    assert result.layer == layer == default_segmentation_layer(model)
    assert result.map.shape == (64, 64) and not result.empty
    with torch.no_grad():
        scores = segmentation_model(model)(image[None])[0]
    region = scores.argmax(0) == category  # brute force: the target by its definition
    assert torch.equal(result.region, region)
    assert result.score == pytest.approx(float(scores[category][region].sum()), rel=1e-5)


def test_equals_pytorch_grad_cam_segmentation_recipe():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget as PgcTarget

    class OutWrapper(torch.nn.Module):  # pytorch-grad-cam's SegmentationModelOutputWrapper
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["out"]

    model = _build("deeplabv3")
    image = _image(seed=3)
    compared = 0
    for category in range(3):
        with torch.no_grad():
            mask = (model(image[None])["out"][0].argmax(0) == category).float()
        if not mask.any():
            continue
        with pgc.GradCAM(OutWrapper(model), [model.backbone.layer4]) as cam:
            theirs = cam(image[None], targets=[PgcTarget(category, mask.numpy())])[0]
        ours = explain_segmentation(model, image, category, layer="backbone.layer4")
        if theirs.max() > 0:
            assert _pearson(ours.map, theirs) >= 0.999, category
            compared += 1
    assert compared, "nothing compared"


def test_given_region_box_and_mask_and_refusals():
    model = _build("fcn")
    image = _image()
    box = region_mask((8, 16, 24, 40), (64, 64))
    expected = torch.zeros(64, 64, dtype=torch.bool)
    for y in range(64):  # pixel centres inside the box
        for x in range(64):
            expected[y, x] = 8 <= x + 0.5 <= 24 and 16 <= y + 0.5 <= 40
    assert torch.equal(box, expected)
    by_box = explain_segmentation(model, image, 2, region=(8, 16, 24, 40))
    by_mask = explain_segmentation(model, image, 2, region=expected.numpy())
    assert torch.allclose(by_box.map, by_mask.map) and torch.equal(by_box.region, expected)
    with pytest.raises(EmptyRegionError, match="holds no pixel"):
        explain_segmentation(model, image, 2, region=torch.zeros(64, 64))
    with torch.no_grad():
        predicted = set(segmentation_model(model)(image[None])[0].argmax(0).unique().tolist())
    absent = sorted({0, 1, 2} - predicted)
    if absent:
        with pytest.raises(EmptyRegionError, match="predicted nowhere"):
            explain_segmentation(model, image, absent[0])
    with pytest.raises(ValueError, match="out of range"):
        explain_segmentation(model, image, 7)


def test_hf_segformer():
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    image = _image()
    category = _predicted_class(model, image)
    result = explain_segmentation(model, image, category)
    assert result.layer == "segformer.stages.1.layer_norm"
    assert result.map.shape == (64, 64) and not result.empty
