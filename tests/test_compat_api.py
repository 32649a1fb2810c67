"""pytorch-grad-cam's public API under camscope's name: module paths, names, call signatures.

The reference is the installed pytorch-grad-cam 1.5.7 (the ``grad-cam`` package, a test
dependency): every public module of it must exist as ``camscope.<same path>`` with the same
names, and every class and function there must accept pytorch-grad-cam's arguments, by
position and by name. Behaviour is checked in tests/test_compat_maps.py.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch
from torch import nn

pgc = pytest.importorskip("pytorch_grad_cam")


def _modules() -> list[str]:
    names = [""]
    for info in pkgutil.walk_packages(pgc.__path__, prefix=""):
        names.append(info.name)
    return sorted(names)


def _public(module) -> dict[str, object]:
    """Names a user imports from ``module``: defined there, or re-exported by a package."""
    names = {}
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        home = getattr(value, "__module__", "") or ""
        if home.startswith("pytorch_grad_cam") and (
            home == module.__name__ or hasattr(module, "__path__")  # a package re-exports
        ):
            names[name] = value
    return names


def _ours(path: str):
    return importlib.import_module("camscope" + (f".{path}" if path else ""))


def _accepts(theirs, ours) -> None:
    """``ours`` accepts ``theirs``' parameters by position and by name."""
    target = theirs.__init__ if inspect.isclass(theirs) else theirs
    mine = ours.__init__ if inspect.isclass(ours) else ours
    params = [
        p
        for p in inspect.signature(target).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    ]
    signature = inspect.signature(mine)
    if inspect.isclass(ours):
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    signature.bind_partial(*[None] * len(positional))
    signature.bind_partial(**{p.name: None for p in params})


@pytest.mark.parametrize("path", _modules())
def test_module_path_names_and_signatures(path):
    theirs = importlib.import_module("pytorch_grad_cam" + (f".{path}" if path else ""))
    ours = _ours(path)
    missing = []
    for name, value in _public(theirs).items():
        if not hasattr(ours, name):
            missing.append(name)
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            _accepts(value, getattr(ours, name))
    assert not missing, f"camscope.{path} lacks {missing}"


def test_compat_classes_are_camscope_classes_not_copies():
    import camscope
    from camscope import ablation_cam, base_cam, eigen_cam, grad_cam, score_cam
    from camscope.utils import model_targets

    assert grad_cam.GradCAM is camscope.GradCAM is camscope.methods.GradCAM
    assert score_cam.ScoreCAM is camscope.ScoreCAM and eigen_cam.EigenCAM is camscope.EigenCAM
    assert ablation_cam.AblationCAM is camscope.AblationCAM
    assert base_cam.BaseCAM is camscope.BaseCAM
    assert model_targets.ClassifierOutputTarget is camscope.ClassifierOutputTarget


def test_registry_keeps_camscope_choices_while_classes_default_to_pgc():
    from camscope.methods import build_cam

    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 3, 6, 6))
    layer = "0"
    assert build_cam("ablationcam", model, layer).ablation_value == "zero"
    assert build_cam("scorecam", model, layer).variant == "reference"
    assert build_cam("eigencam", model, layer).eigen_sign == "mean"
    assert build_cam("eigengradcam", model, layer).eigen_sign == "mean"
    import camscope

    assert camscope.AblationCAM(model, layer).ablation_value == "pytorch-grad-cam"
    assert camscope.ScoreCAM(model, layer).variant == "pytorch-grad-cam"
    assert camscope.EigenCAM(model, layer).eigen_sign == "pytorch-grad-cam"


def test_pgc_attributes_and_lifecycle():
    import camscope

    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, 3, 6, 6))
    assert camscope.GradCAM(model, [model[1]]).uses_gradients
    assert not camscope.ScoreCAM(model, [model[1]]).uses_gradients
    assert not camscope.AblationCAM(model, [model[1]]).uses_gradients
    assert not camscope.EigenCAM(model, [model[1]]).uses_gradients
    assert camscope.FullGrad(model, []).compute_input_gradient
    assert not camscope.GradCAM(model, [model[1]]).compute_input_gradient
    cam = camscope.AblationCAM(model, [model[1]])
    cam.batch_size = 4
    assert cam.batch_size == 4
    score = camscope.ScoreCAM(model, [model[1]])
    score.batch_size = 4
    assert score.chunk_size == 4
    x = torch.randn(2, 3, 6, 6)
    with camscope.GradCAM(model=model, target_layers=[model[1]]) as cam:
        cam(input_tensor=x, targets=None)
        assert torch.allclose(cam.outputs, model(x))
    cam.__del__()  # after close: harmless
    broken = object.__new__(camscope.ScoreCAM)  # as after a failed __init__
    broken.__del__()
    with pytest.raises(ValueError, match="eigen_sign"):
        camscope.GradCAM(model, [model[1]], eigen_sign="nope")


class PgcStyle:
    """A pytorch-grad-cam-style subclass: only ``get_cam_weights`` (here: Grad-CAM's)."""

    @staticmethod
    def get_cam_weights(input_tensor, target_layer, targets, activations, grads):
        return np.mean(grads, axis=(2, 3))


def test_subclass_with_get_cam_weights_is_grad_cam():
    from camscope.base_cam import BaseCAM
    from camscope.grad_cam import GradCAM

    class MyCAM(PgcStyle, BaseCAM):
        pass

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, 3, 10, 10)
    model(x)
    mine = MyCAM(model, [model[1]])(x, [1, 2])
    reference = GradCAM(model, [model[1]])(x, [1, 2])
    assert (mine - reference).abs().max() <= 1e-6


def test_targets_equal_pytorch_grad_cam():
    from pytorch_grad_cam.utils import model_targets as theirs

    from camscope.utils import model_targets as ours

    torch.manual_seed(0)
    logits = torch.randn(4, 10, dtype=torch.float64)
    seg = torch.randn(3, 5, 6)
    mask = (np.random.default_rng(0).random((5, 6)) > 0.5).astype(np.float32)
    cases = [
        ("ClassifierOutputTarget", (3,), logits),
        ("ClassifierOutputTarget", (3,), logits[0]),
        ("ClassifierOutputSoftmaxTarget", (2,), logits),
        ("ClassifierOutputSoftmaxTarget", (2,), logits[1]),
        ("ClassifierOutputReST", (5,), logits),
        ("ClassifierOutputReST", (5,), logits[2]),
        ("BinaryClassifierOutputTarget", (0,), logits[:, :1]),
        ("BinaryClassifierOutputTarget", (1,), logits[:, :1]),
        ("SoftmaxOutputTarget", (), logits),
        ("RawScoresOutputTarget", (), logits),
        ("SemanticSegmentationTarget", (1, mask), seg),
        ("FinerWeightedTarget", (1, [2, 4], 0.6), logits),
        ("FinerWeightedTarget", (1, [2, 4], 0.6), logits[3]),
    ]
    for name, args, output in cases:
        expected = getattr(theirs, name)(*copy.deepcopy(args))(output)
        got = getattr(ours, name)(*args)(output)
        assert got.shape == expected.shape and torch.allclose(got, expected), name


def test_faster_rcnn_target_equals_pytorch_grad_cam():
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget as Theirs

    from camscope.utils.model_targets import FasterRCNNBoxScoreTarget as Ours

    boxes = [np.array([0.0, 0.0, 10.0, 10.0]), np.array([20.0, 20.0, 40.0, 30.0])]
    outputs = {
        "boxes": torch.tensor([[1.0, 0, 10, 10], [19, 21, 40, 30], [50, 50, 60, 60]]),
        "labels": torch.tensor([1, 2, 2]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
    }
    for labels in ([1, 2], [1, 3], [2, 2]):
        expected = Theirs(labels, boxes)(outputs)
        got = Ours(labels, boxes)(outputs)
        assert got.shape == expected.shape == (1,) and torch.allclose(got, expected)
    double = {k: v.double() if v.is_floating_point() else v for k, v in outputs.items()}
    assert Ours([1], boxes[:1])(double).dtype == torch.float64
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0), "scores": torch.zeros(0)}
    assert Ours([1], boxes[:1])(empty).tolist() == [0.0]


def test_image_helpers_equal_pytorch_grad_cam():
    pytest.importorskip("cv2")
    from pytorch_grad_cam.utils import image as theirs

    from camscope.utils import image as ours

    rng = np.random.default_rng(0)
    for shape, size in [((2, 7, 7), (32, 24)), ((1, 5, 9), (3, 2)), ((1, 6, 6), None)]:
        cams = rng.random(shape).astype(np.float32)
        expected = theirs.scale_cam_image(cams, size)
        assert np.abs(ours.scale_cam_image(cams, size) - expected).max() <= 1e-5
        assert np.abs(ours.scale_cam_image(torch.from_numpy(cams), size) - expected).max() <= 1e-5
    batch = rng.random((2, 3, 5, 5)).astype(np.float32)
    assert np.allclose(
        ours.scale_accross_batch_and_channels(batch, (8, 6)),
        theirs.scale_accross_batch_and_channels(batch, (8, 6)),
        atol=1e-5,
    )
    img = rng.random((16, 12, 3)).astype(np.float32)
    mask = rng.random((16, 12)).astype(np.float32)
    for use_rgb in (False, True):
        expected = theirs.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=0.3)
        got = ours.show_cam_on_image(img, torch.from_numpy(mask), use_rgb, image_weight=0.3)
        assert np.array_equal(got, expected)
    for image in (img, np.uint8(img * 255)):
        assert torch.equal(ours.preprocess_image(image), theirs.preprocess_image(image))
        assert torch.equal(
            ours.preprocess_image(image, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]),
            theirs.preprocess_image(image, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]),
        )
    assert np.array_equal(ours.deprocess_image(img), theirs.deprocess_image(img))
    explanations = rng.random((3, 16, 12)).astype(np.float32)
    colors = [np.array([1.0, 0, 0, 1]), np.array([0, 1.0, 0.5, 1]), np.array([0.2, 0.3, 1.0, 1])]
    assert np.array_equal(
        ours.show_factorization_on_image(img, explanations.copy(), colors),
        theirs.show_factorization_on_image(img, explanations.copy(), colors),
    )
    labelled = ours.show_factorization_on_image(
        img, explanations.copy(), concept_labels=list("abc")
    )
    assert labelled.shape == (16, 24, 3)
    scores = rng.random((3, 5))
    labels = {i: f"class {i}, more, words, dropped" for i in range(5)}
    assert ours.create_labels_legend(scores, labels, 2) == theirs.create_labels_legend(
        scores, labels, 2
    )


def test_projections_equal_pytorch_grad_cam_and_leave_the_input_alone():
    from pytorch_grad_cam.utils import svd_on_activations as theirs

    from camscope.utils import svd_on_activations as ours

    rng = np.random.default_rng(1)
    batch = rng.standard_normal((3, 6, 5, 4)).astype(np.float32) + np.linspace(0, 2, 20).reshape(
        5, 4
    ).astype(np.float32)
    batch[0, 0, 0, 0] = np.nan
    snapshot = batch.copy()
    for name in ("get_2d_projection", "get_2d_projection_with_sign_correction"):
        got, expected = getattr(ours, name)(batch), getattr(theirs, name)(batch)
        assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-5), name
        assert np.array_equal(batch, snapshot, equal_nan=True)
    got = ours.get_2d_projection_kernel(batch)
    assert np.array_equal(batch, snapshot, equal_nan=True)
    expected = theirs.get_2d_projection_kernel(batch.copy())
    for n in range(3):  # a kernel PCA component's sign is the solver's: compare |r|
        r = np.corrcoef(got[n].ravel(), expected[n].ravel())[0, 1]
        assert abs(r) >= 0.999


def test_reshape_transforms_equal_pytorch_grad_cam():
    from pytorch_grad_cam.utils import reshape_transforms as theirs

    from camscope.utils import reshape_transforms as ours

    torch.manual_seed(0)
    vit = torch.randn(2, 1 + 16, 8)
    assert torch.equal(
        ours.vit_reshape_transform(vit, 4, 4), theirs.vit_reshape_transform(vit, 4, 4)
    )
    swin = torch.randn(2, 9, 8)
    assert torch.equal(
        ours.swinT_reshape_transform(swin, 3, 3), theirs.swinT_reshape_transform(swin, 3, 3)
    )
    fpn = {k: torch.randn(1, 4, s, s) for k, s in (("0", 16), ("1", 8), ("pool", 4))}
    assert torch.equal(
        ours.fasterrcnn_reshape_transform(fpn), theirs.fasterrcnn_reshape_transform(fpn)
    )


def test_find_layers_equal_pytorch_grad_cam():
    from pytorch_grad_cam.utils import find_layers as theirs

    from camscope.utils import find_layers as ours

    def model():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
        )

    a = model()
    assert ours.find_layer_types_recursive(a, [nn.ReLU]) == theirs.find_layer_types_recursive(
        a, [nn.ReLU]
    )
    predicate = lambda m: isinstance(m, nn.BatchNorm2d)  # noqa: E731
    assert ours.find_layer_predicate_recursive(a, predicate) == [a[2][0]]
    new = nn.Identity()
    assert ours.replace_layer_recursive(a, a[2][0], new) and a[2][0] is new
    ours.replace_all_layer_type_recursive(a, nn.ReLU, nn.GELU())
    assert not ours.find_layer_types_recursive(a, [nn.ReLU])


def test_activations_and_gradients_equal_pytorch_grad_cam():
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients as Theirs

    from camscope.activations_and_gradients import ActivationsAndGradients as Ours

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.Flatten())
    x = torch.randn(2, 3, 7, 7)
    records = []
    for cls in (Theirs, Ours):
        recorder = cls(model, [model[0], model[2]], None)
        recorder(x).sum().backward()
        records.append((list(recorder.activations), list(recorder.gradients)))
        recorder.release()
    for mine, theirs in zip(records[1], records[0], strict=True):
        assert len(mine) == len(theirs) == 2
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))
    assert not any(m._forward_hooks for m in model.modules())
