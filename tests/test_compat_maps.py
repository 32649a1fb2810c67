"""Same maps as pytorch-grad-cam, on the same model and input, for every shared class.

The reference is the installed pytorch-grad-cam 1.5.7 (the ``grad-cam`` package, a test
dependency), run on the same random-weight models (nothing downloads): ResNet-18 at 96 px, a
tiny ViT and a tiny Swin (timm, small configs) with pytorch-grad-cam's ``reshape_transform``.
Each map must correlate with pytorch-grad-cam's at r >= 0.999 (Pearson, per map). The classes
are imported by pytorch-grad-cam's names from camscope, with their defaults: they reproduce
pytorch-grad-cam (AblationCAM's ablation value, ScoreCAM's weights, the eigen sign).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as TheirTarget  # noqa: E402

import camscope  # noqa: E402
from camscope.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from camscope.utils.reshape_transforms import (  # noqa: E402
    swinT_reshape_transform,
    vit_reshape_transform,
)

R_MIN = 0.999
TARGETS = [281, 7]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def assert_same_maps(ours, theirs, r_min: float = R_MIN) -> None:
    ours = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
    assert ours.shape == theirs.shape
    for n, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if np.ptp(b) < 1e-6:  # pytorch-grad-cam's map is flat: so must ours be
            assert np.ptp(a) < 1e-5, n
            continue
        r = pearson(a, b)
        assert r >= r_min, (n, r)


def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=1000)
    with torch.no_grad():  # running statistics unlike a batch's: eval and train mode differ
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def model():
    return resnet18().eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 96)


def run_theirs(cls, model, layers, x, targets, reshape=None, attrs=None, **call):
    kwargs = {} if reshape is None else {"reshape_transform": reshape}
    with cls(model=model, target_layers=layers, **kwargs) as cam:
        for key, value in (attrs or {}).items():
            setattr(cam, key, value)
        return cam(input_tensor=x, targets=[TheirTarget(t) for t in targets], **call)


def run_ours(cls, model, layers, x, targets, reshape=None, attrs=None, **call):
    kwargs = {} if reshape is None else {"reshape_transform": reshape}
    with cls(model=model, target_layers=layers, **kwargs) as cam:
        for key, value in (attrs or {}).items():
            setattr(cam, key, value)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets], **call)


def test_readme_snippet_as_written_no_eval(tmp_path):
    """pytorch-grad-cam's README usage, model left in training mode as the README leaves it."""
    from camscope import GradCAM
    from camscope.utils.image import preprocess_image, show_cam_on_image

    model = resnet18()  # never model.eval(): the README does not call it
    theirs_model = copy.deepcopy(model)
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    rgb_img = rng.random((96, 96, 3)).astype(np.float32)
    input_tensor = preprocess_image(rgb_img, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    target_layers = [model.layer4[-1]]
    targets = [ClassifierOutputTarget(281)]
    with GradCAM(model=model, target_layers=target_layers) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets)
        grayscale_cam = grayscale_cam[0, :]
        visualization = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        model_outputs = cam.outputs
    # the model is unchanged: running statistics byte-identical, its mode restored
    assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules())

    from pytorch_grad_cam import GradCAM as TheirGradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image as their_show

    with TheirGradCAM(model=theirs_model, target_layers=[theirs_model.layer4[-1]]) as cam:
        their_cam = cam(input_tensor=input_tensor, targets=[TheirTarget(281)])[0, :]
        their_vis = their_show(rgb_img, their_cam, use_rgb=True)
        their_outputs = cam.outputs
    assert_same_maps(grayscale_cam[None], their_cam[None])
    assert np.abs(visualization.astype(int) - their_vis).max() <= 2
    assert torch.allclose(model_outputs, their_outputs.detach(), atol=1e-4)


SHARED = [
    "GradCAM", "HiResCAM", "GradCAMElementWise", "XGradCAM", "GradCAMPlusPlus", "LayerCAM",
    "EigenCAM", "EigenGradCAM", "ScoreCAM", "AblationCAM", "FullGrad", "ShapleyCAM", "FEM",
    "KPCA_CAM", "SegEigenCAM",
]  # fmt: skip


@pytest.mark.parametrize("name", SHARED)
def test_shared_class_equals_pytorch_grad_cam(model, x, name):
    layers = [model.layer3[-1]]
    theirs = run_theirs(getattr(pgc, name), model, layers, x, TARGETS)
    ours = run_ours(getattr(camscope, name), model, layers, x, TARGETS)
    assert_same_maps(ours, theirs)


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM"])
def test_eigen_smooth_equals_pytorch_grad_cam(model, x, name):
    layers = [model.layer3[-1]]
    theirs = run_theirs(getattr(pgc, name), model, layers, x, TARGETS, eigen_smooth=True)
    ours = run_ours(getattr(camscope, name), model, layers, x, TARGETS, eigen_smooth=True)
    assert_same_maps(ours, theirs)


@pytest.mark.parametrize("name", ["GradCAM", "EigenCAM"])
def test_aug_smooth_equals_pytorch_grad_cam(model, x, name):
    layers = [model.layer3[-1]]
    theirs = run_theirs(getattr(pgc, name), model, layers, x, TARGETS, aug_smooth=True)
    ours = run_ours(getattr(camscope, name), model, layers, x, TARGETS, aug_smooth=True)
    assert_same_maps(ours, theirs)


def test_multi_layer_equals_pytorch_grad_cam(model, x):
    layers = [model.layer4[-1], model.layer4[-2]]
    theirs = run_theirs(pgc.GradCAM, model, layers, x, TARGETS)
    ours = run_ours(camscope.GradCAM, model, layers, x, TARGETS)
    assert_same_maps(ours, theirs)


def test_ablation_value_and_batch_size_where_activations_are_negative(model, x):
    """conv2 outputs negative values: pytorch-grad-cam's min - 1e7 per batch row.

    (Not bn2: a ResNet block adds the shortcut to bn2's output in place, and pytorch-grad-cam
    keeps that tensor, not a copy, as the activations it weights.)
    """
    layers = [model.layer3[-1].conv2]
    for attrs in ({}, {"batch_size": 5}):
        theirs = run_theirs(pgc.AblationCAM, model, layers, x, TARGETS, attrs=attrs)
        ours = run_ours(camscope.AblationCAM, model, layers, x, TARGETS, attrs=attrs)
        assert_same_maps(ours, theirs)
    paper = camscope.AblationCAM(model, layers, ablation_value="zero")(x, TARGETS)
    assert min(pearson(a, b) for a, b in zip(paper.numpy(), theirs, strict=True)) < R_MIN


def test_ablation_layer_protocol_equals_builtin_on_cnn(model, x):
    layers = [model.layer3[-1].conv2]
    with camscope.AblationCAM(model, layers, ablation_layer=camscope.AblationLayer()) as cam:
        protocol = cam(x, TARGETS)
    builtin = camscope.AblationCAM(model, layers)(x, TARGETS)
    assert (protocol - builtin).abs().max() <= 1e-4


def test_train_mode_model_is_explained_in_eval_mode_unchanged(x):
    model = resnet18().train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    reference = resnet18().eval()
    for cls in (camscope.GradCAM, camscope.ScoreCAM, camscope.AblationCAM, camscope.FullGrad):
        layers = [model.layer4[-1]] if cls is not camscope.ScoreCAM else [model.layer4[-1].conv2]
        ref_layers = [reference.get_submodule(n) for n in _names(model, layers)]
        kwargs = {"max_channels": 32} if cls is camscope.ScoreCAM else {}
        maps = cls(model, layers, **kwargs)(x[:1], TARGETS[:1])
        expected = cls(reference, ref_layers, **kwargs)(x[:1], TARGETS[:1])
        assert torch.allclose(maps, expected, atol=1e-5), cls.__name__
        assert all(torch.equal(v, stats[k]) for k, v in model.state_dict().items()), cls.__name__
        assert all(m.training for m in model.modules()), cls.__name__


def _names(model, layers):
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(layer)] for layer in layers]


# -- transformers (timm, random weights, small configs) ---------------------------------------


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(2)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=10
    )
    return model.eval()


def vit_reshape(tensor):
    return vit_reshape_transform(tensor, height=4, width=4)


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "EigenCAM", "ScoreCAM"])
def test_vit_with_reshape_transform_equals_pytorch_grad_cam(vit, name):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    layers = [vit.blocks[-1].norm1]
    targets = [3, 8]
    theirs = run_theirs(getattr(pgc, name), vit, layers, x, targets, reshape=vit_reshape)
    ours = run_ours(getattr(camscope, name), vit, layers, x, targets, reshape=vit_reshape)
    assert_same_maps(ours, theirs)


def test_vit_ablation_cam_with_ablation_layer_vit_equals_pytorch_grad_cam(vit):
    torch.manual_seed(3)
    x = torch.randn(2, 3, 64, 64)
    layers = [vit.blocks[-1].norm1]
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(8)]
    with pgc.AblationCAM(
        vit, layers, reshape_transform=vit_reshape, ablation_layer=pgc.AblationLayerVit()
    ) as cam:
        theirs = cam(x, [TheirTarget(3), TheirTarget(8)])
    with camscope.AblationCAM(
        vit, layers, reshape_transform=vit_reshape, ablation_layer=camscope.AblationLayerVit()
    ) as cam:
        ours = cam(x, targets)
    assert_same_maps(ours, theirs)


@pytest.fixture(scope="module")
def swin():
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    model = timm.models.swin_transformer.SwinTransformer(
        img_size=64, patch_size=4, window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2),
        num_classes=10,
    )  # fmt: skip
    return model.eval()


def swin_reshape(tensor):
    return swinT_reshape_transform(tensor, height=8, width=8)


@pytest.mark.parametrize("name", ["GradCAM", "EigenCAM", "LayerCAM"])
def test_swin_with_reshape_transform_equals_pytorch_grad_cam(swin, name):
    torch.manual_seed(5)
    x = torch.randn(2, 3, 64, 64)
    layers = [swin.layers[-1].blocks[-1].norm1]
    targets = [1, 6]
    theirs = run_theirs(getattr(pgc, name), swin, layers, x, targets, reshape=swin_reshape)
    ours = run_ours(getattr(camscope, name), swin, layers, x, targets, reshape=swin_reshape)
    assert_same_maps(ours, theirs)


def test_deep_feature_factorization_equals_pytorch_grad_cam(model, x):
    from pytorch_grad_cam import DeepFeatureFactorization as Theirs

    head = model.fc
    theirs = Theirs(model, model.layer4, computation_on_concepts=head)
    their_concepts, their_maps, their_outputs = theirs(x, n_components=4)
    theirs.activations_and_grads.release()
    ours = camscope.DeepFeatureFactorization(model, model.layer4, computation_on_concepts=head)
    concepts, maps, outputs = ours(x, n_components=4)
    assert np.allclose(concepts, their_concepts, rtol=1e-4, atol=1e-4)
    assert np.allclose(outputs, their_outputs, rtol=1e-4, atol=1e-3)
    for mine, their in zip(maps, their_maps, strict=True):
        assert_same_maps(mine, their)


def test_ablation_ratio_channels_to_ablate_equals_pytorch_grad_cam(model, x):
    """pytorch-grad-cam's experiment: only the top and bottom quarter of channels ablated."""
    layers = [model.layer3[-1].conv2]
    with pgc.AblationCAM(model, layers, ratio_channels_to_ablate=0.25) as cam:
        theirs = cam(x, [TheirTarget(t) for t in TARGETS])
    with camscope.AblationCAM(model, layers, ratio_channels_to_ablate=0.25) as cam:
        ours = cam(x, TARGETS)
    assert_same_maps(ours, theirs)
