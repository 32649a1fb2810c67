"""Transformers and default layers: token / channels-last maps read right, or refused.

Random-weight models only (``pretrained=False`` / ``weights=None``): layouts and default layers
do not depend on the weights. The comparisons with pytorch-grad-cam use its own reshape
transforms (``vit_reshape_transform``; ``swinT_reshape_transform`` on timm 1.x's channels-last
Swin output flattened back to the (N, 49, C) tokens it was written for).
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torchvision
from click.testing import CliRunner
from torch import nn

from camscope.layers import LayerError, check_layer, default_layer, probe_layers
from camscope.layers.layout import Layout, LayoutError, detect_layout

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 224, 224)


# --------------------------------------------------------------------------------------------
# Layouts against brute-force index arithmetic
# --------------------------------------------------------------------------------------------


def test_token_layout_against_loops():
    torch.manual_seed(0)
    n, prefix, h, w, c = 2, 2, 3, 4, 5
    tokens = torch.randn(n, prefix + h * w, c, dtype=torch.float64)
    layout = Layout("tokens", (h, w), c, prefix)
    mapped = layout.to_map(tokens)
    expected = torch.empty(n, c, h, w, dtype=torch.float64)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                expected[i, :, y, x] = tokens[i, prefix + y * w + x]  # row-major patches
    assert torch.equal(mapped, expected)
    # inverse: patches replaced, prefix tokens put back unchanged (from a batch-1 `like`)
    new = torch.randn(3, c, h, w, dtype=torch.float64)
    back = layout.from_map(new, tokens[:1])
    assert back.shape == (3, prefix + h * w, c)
    assert torch.equal(back[:, :prefix], tokens[:1, :prefix].expand(3, -1, -1))
    assert torch.equal(layout.to_map(back), new)


def test_channels_last_layout_against_loops():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)  # (N, h, w, C)
    layout = Layout("channels_last", (3, 4), 5)
    mapped = layout.to_map(x)
    for y in range(3):
        for col in range(4):
            assert torch.equal(mapped[:, :, y, col], x[:, y, col, :])
    assert torch.equal(layout.from_map(mapped, x), x)


@pytest.mark.parametrize(
    "shape, size, kind, grid, prefix",
    [
        ((1, 197, 192), (224, 224), "tokens", (14, 14), 1),  # ViT
        ((1, 198, 192), (224, 224), "tokens", (14, 14), 2),  # DeiT distilled
        ((1, 196, 192), (224, 224), "tokens", (14, 14), 0),  # patch embedding
        ((1, 7, 7, 768), (224, 224), "channels_last", (7, 7), 0),  # Swin
        ((1, 2048, 7, 7), (224, 224), "channels_first", (7, 7), 0),
        ((1, 512, 14, 10), (448, 320), "channels_first", (14, 10), 0),
        ((1, 129, 64), (256, 128), "tokens", (16, 8), 1),  # non-square image, 16-px patches
        ((1, 2048, 10, 10), (299, 299), "channels_first", (10, 10), 0),  # odd size, rounding
    ],
)
def test_detect_layout(shape, size, kind, grid, prefix):
    layout = detect_layout(shape, size)
    assert (layout.kind, layout.grid, layout.prefix) == (kind, grid, prefix)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((1, 3, 197, 64), "neither"),  # attention heads (N, heads, T, d): the old stripes
        ((1, 3, 197, 197), "neither"),  # attention weights
        ((64, 49, 96), "not the batch"),  # Swin windows folded into the batch
        ((1, 1000), "2-D"),
        ((1, 64, 49), "ambiguous"),  # (N, C, L) or (N, T, C)?
        ((1, 150, 64), "not 0-2 prefix tokens"),
        ((1, 8, 8, 8, 8), "5-D"),
    ],
)
def test_detect_layout_refuses(shape, match):
    with pytest.raises(LayoutError, match=match):
        detect_layout(shape, (224, 224))


def test_model_patch_grid_decides_prefix_tokens():
    """A model that declares 4 register tokens + 1 class token: read from the model."""

    class Reg(nn.Module):
        num_prefix_tokens = 5
        patch_embed = type("PE", (), {"patch_size": (16, 16)})()

    layout = detect_layout((1, 5 + 196, 192), (224, 224), Reg())
    assert (layout.prefix, layout.grid) == (5, (14, 14))
    with pytest.raises(LayoutError):  # without the model, 5 prefix tokens are not guessed
        detect_layout((1, 5 + 196, 192), (224, 224))


# --------------------------------------------------------------------------------------------
# Default layers: the usual choice, a table over random-weight models
# --------------------------------------------------------------------------------------------


def _tv(name, **kw):
    return lambda: torchvision.models.get_model(name, weights=None, **kw)


def _tv_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(224, 32, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def _tv_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer([4, 4], 16, [1, 1, 1, 1], [1, 1, 1, 1], [7, 7])


def _timm(name):
    return lambda: timm.create_model(name, pretrained=False)


DEFAULTS = [
    # torchvision (weights=None)
    ("tv vgg16", _tv("vgg16"), 64, "features.29", "channels_first"),
    ("tv resnet18", _tv("resnet18"), 64, "layer4.1", "channels_first"),
    ("tv densenet121", _tv("densenet121"), 64, "features.norm5", "channels_first"),
    ("tv mobilenet_v2", _tv("mobilenet_v2"), 64, "features.18", "channels_first"),
    ("tv mobilenet_v3_small", _tv("mobilenet_v3_small"), 64, "features.12", "channels_first"),
    ("tv efficientnet_b0", _tv("efficientnet_b0"), 64, "features.8", "channels_first"),
    ("tv convnext_tiny", _tv("convnext_tiny"), 64, "features.7", "channels_first"),
    ("tv regnet_y_400mf", _tv("regnet_y_400mf"), 64, "trunk_output.block4", "channels_first"),
    ("tv vit (small)", _tv_vit, 224, "encoder.layers.encoder_layer_1.ln_1", "tokens"),
    ("tv swin (small)", _tv_swin, 224, "features.7.0.norm1", "channels_last"),
    # timm (pretrained=False)
    ("timm vit_tiny", _timm("vit_tiny_patch16_224"), 224, "blocks.11.norm1", "tokens"),
    (
        "timm deit distilled",
        _timm("deit_tiny_distilled_patch16_224"),
        224,
        "blocks.11.norm1",
        "tokens",
    ),
    ("timm resnet18", _timm("resnet18"), 64, "layer4.1", "channels_first"),
    ("timm efficientnet_b0", _timm("efficientnet_b0"), 64, "bn2", "channels_first"),
    ("timm mobilenetv2_050", _timm("mobilenetv2_050"), 64, "bn2", "channels_first"),
    (
        "timm mobilenetv3_small_050",
        _timm("mobilenetv3_small_050"),
        64,
        "blocks.5",
        "channels_first",
    ),
    ("timm convnext_atto", _timm("convnext_atto"), 64, "stages.3", "channels_first"),
    ("timm regnetx_002", _timm("regnetx_002"), 64, "s4", "channels_first"),
    ("timm densenet121", _timm("densenet121"), 64, "features.norm5", "channels_first"),
]


@pytest.mark.parametrize(
    "build, size, expected, kind", [d[1:] for d in DEFAULTS], ids=[d[0] for d in DEFAULTS]
)
def test_default_layer_table(build, size, expected, kind):
    torch.manual_seed(0)
    model = build().eval()
    assert default_layer(model, (size, size)) == expected
    check = check_layer(model, expected, (size, size))
    assert check.layout.kind == kind and check.layout.grid[0] * check.layout.grid[1] > 1
    assert not any(m._forward_hooks for m in model.modules())


def test_swin_default_layer(swin):
    # pytorch-grad-cam's documented Swin layer: model.layers[-1].blocks[-1].norm1
    assert default_layer(swin) == "layers.3.blocks.1.norm1"
    check = check_layer(swin, swin.layers[-1].blocks[-1].norm1)
    assert check.layout == Layout("channels_last", (7, 7), 768)


# --------------------------------------------------------------------------------------------
# The old silent cases are refused before any image, with the shape and valid choices
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shape",
    [
        ("blocks.11.attn.k_norm", "(1, 3, 197, 64)"),  # the old default: stripes over heads
        ("head", "(1, 1000)"),
        ("fc_norm", "(1, 192)"),
    ],
)
def test_vit_non_map_layers_refused(vit, layer, shape):
    with pytest.raises(LayerError) as info:
        check_layer(vit, layer)
    message = str(info.value)
    assert f"--layer {layer}: output {shape}" in message and "\n" not in message
    assert "valid choices: the default blocks.11.norm1" in message


def test_swin_old_default_norm_is_read_channels_last(swin):
    # the old default read (1, 7, 7, 768) as 7 channels of 7x768 (stripes); now 768 x 7x7
    assert check_layer(swin, "norm").layout == Layout("channels_last", (7, 7), 768)
    with pytest.raises(LayerError, match=r"output \(1, 768\)"):
        check_layer(swin, "head.global_pool")
    with pytest.raises(LayerError, match=r"output \(64, 49, 96\): first axis is 64"):
        check_layer(swin, "layers.0.blocks.0.attn")


# --------------------------------------------------------------------------------------------
# Grad-CAM through the layouts: a float64 reference, and pytorch-grad-cam with its transforms
# --------------------------------------------------------------------------------------------


def reference_gradcam(model, module, layout, images, targets):
    """Grad-CAM in float64: hook the layer, d logit / d output, layout.to_map, mean, ReLU."""
    saved = []
    handle = module.register_forward_hook(lambda _m, _i, out: saved.append(out))
    try:
        logits = model(images)
    finally:
        handle.remove()
    score = logits[torch.arange(len(targets)), torch.tensor(targets)].sum()
    (grads,) = torch.autograd.grad(score, saved[0])
    acts = layout.to_map(saved[0].detach()).double()
    grads = layout.to_map(grads).double()
    weights = grads.mean(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * acts).sum(1))


def _pearson(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _pgc_gradcam(model, layer, transform, images, targets):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=transform) as cam:
        maps = cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets])
    assert not any(m._forward_hooks for m in model.modules())
    return maps


def _swin_transform():
    from pytorch_grad_cam.utils.reshape_transforms import swinT_reshape_transform

    return lambda t: swinT_reshape_transform(t.flatten(1, 2))  # timm 1.x: (N, 7, 7, C)


def _vit_transform():
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    return vit_reshape_transform


@pytest.mark.parametrize("which", ["vit", "swin"])
def test_layout_gradcam_matches_pytorch_grad_cam(which, vit, swin, images):
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image

    model = vit if which == "vit" else swin
    transform = _vit_transform() if which == "vit" else _swin_transform()
    check = check_layer(model, default_layer(model))
    targets = [3, 817]
    ours = reference_gradcam(model, check.module, check.layout, images, targets)
    # the layout reads the output exactly as pytorch-grad-cam's transform does
    with torch.no_grad():
        sample = torch.randn(check.output_shape)
        assert torch.equal(check.layout.to_map(sample), transform(sample))
    theirs = _pgc_gradcam(model, check.module, transform, images, targets)
    ours_scaled = scale_cam_image(ours.numpy(), (224, 224))
    for n in range(len(targets)):
        assert _pearson(ours_scaled[n], theirs[n]) >= 0.9999


def test_vit_default_layer_map_is_not_stripes(vit, images):
    check = check_layer(vit, default_layer(vit))
    raw = reference_gradcam(vit, check.module, check.layout, images, [3, 817])
    assert raw.shape == (2, 14, 14)
    for cam in raw:
        assert cam.std(dim=0).mean() > 1e-3 * cam.max()  # varies down the rows
        assert cam.std(dim=1).mean() > 1e-3 * cam.max()  # and across the columns


@pytest.mark.parametrize(
    "which, method",
    [
        ("vit", "GradCAM"),
        ("swin", "GradCAM"),
        ("vit", "GradCAMPlusPlus"),
        ("vit", "XGradCAM"),
        ("vit", "LayerCAM"),
        ("swin", "GradCAMPlusPlus"),
    ],
)
def test_camscope_matches_pytorch_grad_cam(which, method, vit, swin, images):
    """camscope reads the layer itself; pytorch-grad-cam is given its reshape transforms."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from camscope import methods

    model = vit if which == "vit" else swin
    transform = _vit_transform() if which == "vit" else _swin_transform()
    layer = model.blocks[-1].norm1 if which == "vit" else model.layers[-1].blocks[-1].norm1
    targets = [3, 817]
    result = getattr(methods, method)(model, target_layers=[layer]).explain(images, targets)
    with getattr(pgc, method)(
        model=model, target_layers=[layer], reshape_transform=transform
    ) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets])
    ours = scale_cam_image(result.raw.double().numpy(), (224, 224))
    for n in range(len(targets)):
        assert _pearson(ours[n], theirs[n]) >= 0.9999
    assert not any(m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------------------------
# camscope layers
# --------------------------------------------------------------------------------------------


def test_layers_command_marks_default_and_usable():
    from camscope.cli import main

    result = CliRunner().invoke(main, ["layers", "--model", "vit_tiny_patch16_224"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert "<- default" in lines["blocks.11.norm1"] and "(1, 197, 192)" in lines["blocks.11.norm1"]
    assert "yes: tokens (1 prefix + 14x14 grid" in lines["blocks.11.norm1"]
    assert (
        "no:" in lines["blocks.11.attn.k_norm"]
        and "(1, 3, 197, 64)" in lines["blocks.11.attn.k_norm"]
    )
    assert "no: no spatial positions" in lines["head"] and "(1, 1000)" in lines["head"]
    assert sum("<- default" in line for line in lines.values()) == 1
    usable = CliRunner().invoke(main, ["layers", "--model", "vit_tiny_patch16_224", "--usable"])
    assert "k_norm" not in usable.output and "blocks.11.norm1" in usable.output


def test_probe_layers_removes_hooks(vit):
    probes = probe_layers(vit)
    assert not any(m._forward_hooks for m in vit.modules())
    assert {p.name for p in probes} == {n for n, _ in vit.named_modules() if n}


@pytest.mark.parametrize("which", ["vit", "swin"])
def test_default_layer_splits_exactly(which, vit, swin, images):
    """torch.fx splits ViT and Swin at their default layers: no whole-network re-runs."""
    from camscope.layers.split import FxSplit

    model = vit if which == "vit" else swin
    runner = FxSplit(model, default_layer(model))
    with torch.no_grad():
        activations, cache = runner.features(images)
        reference = model(images)
        assert torch.allclose(runner.classify(activations, cache), reference, atol=1e-5)
        many = activations[1:2].expand(3, *activations.shape[1:])
        out = runner.classify(many, runner.expand_cache(cache, 1, 3))
    assert torch.allclose(out, reference[1:2].expand(3, -1), atol=1e-5)
