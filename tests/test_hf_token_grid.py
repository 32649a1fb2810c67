"""Hugging Face token grids from the model's config, checked against brute force.

The layout of a transformer layer's tokens (prefix tokens, then the patch grid row-major) is
read from the config and the embeddings' token parameters (`hf_token_grids`), not guessed from
the token count. Two references, neither of which uses camscope's layout code:

* perturbation: changing the pixels of one image patch changes exactly one patch token of the
  embeddings' output, the one `Layout.to_map` puts at that patch's (row, column);
* a float64 Grad-CAM computed by hand on tokens reshaped by hand (the prefix count and grid
  written out per case below) equals camscope's raw map.

Tiny random-weight models from configs; nothing is downloaded.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from hf_models import VIT as VIT_BASE  # noqa: E402

from camscope import GradCAM  # noqa: E402
from camscope.adapters.hf import hf_default_layer, hf_token_grids  # noqa: E402
from camscope.layers import check_layer  # noqa: E402
from camscope.layers.layout import LayoutError, detect_layout  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

VIT = {**VIT_BASE, "num_labels": 5}
SWIN = {
    "embed_dim": 24,
    "depths": [1, 1],
    "num_heads": [2, 2],
    "image_size": 64,
    "patch_size": 4,
    "window_size": 4,
    "num_labels": 5,
}


class Interpolating(nn.Module):
    """A user's wrapper running a ViT at another input size (``interpolate_pos_encoding``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, interpolate_pos_encoding=True).logits


def _vit(cls: str, config: str, **kw):
    return lambda: getattr(transformers, cls)(getattr(transformers, config)(**{**VIT, **kw}))


def _swin(**kw):
    return lambda: transformers.SwinForImageClassification(
        transformers.SwinConfig(**{**SWIN, **kw})
    )


def _interpolating():
    return Interpolating(_vit("ViTForImageClassification", "ViTConfig")())


# case -> (builder, input (H, W), embeddings module, patch (ph, pw), prefix, patch grid at the
# embeddings, default layer, prefix and grid there): every number written out by hand
CASES = {
    "vit": (_vit("ViTForImageClassification", "ViTConfig"), (32, 32), "vit.embeddings",
            (4, 4), 1, (8, 8), "vit.layers.1.layernorm_before", 1, (8, 8)),
    # hidden 64 = 8x8: the channel axis could be tokens too (as ViT-L's 1024 = 32x32 at 224)
    "vit-wide": (_vit("ViTForImageClassification", "ViTConfig", hidden_size=64), (32, 32),
                 "vit.embeddings", (4, 4), 1, (8, 8), "vit.layers.1.layernorm_before",
                 1, (8, 8)),
    "vit-non-square": (_vit("ViTForImageClassification", "ViTConfig", image_size=(32, 20)),
                       (32, 20), "vit.embeddings", (4, 4), 1, (8, 5),
                       "vit.layers.1.layernorm_before", 1, (8, 5)),
    "vit-interpolated": (_interpolating, (40, 28), "model.vit.embeddings", (4, 4), 1, (10, 7),
                         "model.vit.layers.1.layernorm_before", 1, (10, 7)),
    "deit-distilled": (_vit("DeiTForImageClassificationWithTeacher", "DeiTConfig"), (32, 32),
                       "deit.embeddings", (4, 4), 2, (8, 8), "deit.layers.1.layernorm_before",
                       2, (8, 8)),
    "deit-non-square": (_vit("DeiTForImageClassificationWithTeacher", "DeiTConfig",
                             image_size=(32, 24), patch_size=(4, 4)), (32, 24),
                        "deit.embeddings", (4, 4), 2, (8, 6), "deit.layers.1.layernorm_before",
                        2, (8, 6)),
    "dinov2-registers": (_vit("Dinov2WithRegistersForImageClassification",
                              "Dinov2WithRegistersConfig", num_register_tokens=4), (32, 32),
                         "dinov2_with_registers.embeddings", (4, 4), 5, (8, 8),
                         "dinov2_with_registers.encoder.layer.1.norm1", 5, (8, 8)),
    "swin": (_swin(), (64, 64), "swin.embeddings.norm", (4, 4), 0, (16, 16), "swin.layernorm",
             0, (8, 8)),
    # 64 channels at an 8x8 grid: as Swin-B's 1024 channels at 7x7
    "swin-wide": (_swin(embed_dim=32), (64, 64), "swin.embeddings.norm", (4, 4), 0, (16, 16),
                  "swin.layernorm", 0, (8, 8)),
    # 60x44: 15x11 patches (padded to whole patches), merged to 8x6 (padded to even)
    "swin-non-square": (_swin(image_size=(60, 44)), (60, 44), "swin.embeddings.norm", (4, 4), 0,
                        (15, 11), "swin.layernorm", 0, (8, 6)),
}  # fmt: skip

# SegFormer (overlapping patch embeddings): no patch maps to one token, so no perturbation case;
# MiT-b0's widths: its last stage (256 channels) at an 8x8 grid reads as 16x16 tokens too
# (as at 16x16 for a 512x512 input). case -> (builder, input, layer, prefix, grid)
SEGFORMER = {
    "segformer-b0-widths": (lambda: transformers.SegformerForSemanticSegmentation(
        transformers.SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[32, 64, 160, 256],
                                     decoder_hidden_size=32, num_labels=5)),
        (256, 256), "segformer.stages.3.layer_norm", 0, (8, 8)),
    # 7x7 kernel, stride 4, padding 3 on 100x60: 25x15; 3x3 stride 2 padding 1: 13x8
    "segformer-non-square": (lambda: transformers.SegformerForSemanticSegmentation(
        transformers.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                     hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
                                     num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                                     decoder_hidden_size=32, num_labels=5)),
        (100, 60), "segformer.stages.1.layer_norm", 0, (13, 8)),
}  # fmt: skip


def _build(case: str) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return (CASES.get(case) or SEGFORMER[case])[0]().eval()


def _grad_case(case: str) -> tuple:
    """(input size, layer, prefix, grid) of a case."""
    if case in SEGFORMER:
        return SEGFORMER[case][1:]
    _b, size, _e, _p, _pre, _g, layer, prefix, grid = CASES[case]
    return size, layer, prefix, grid


def _output(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The named module's output for ``x`` (a forward hook; no camscope code)."""
    kept = []
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda _m, _i, out: kept.append(out)
    )
    try:
        model(x)
    finally:
        handle.remove()
    return kept[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_patch_tokens_land_on_their_patch(case):
    """Brute force: perturbing patch (i, j) moves only the map cell (i, j); prefix untouched."""
    _b, size, embeddings, (ph, pw), prefix, grid, *_ = CASES[case]
    model = _build(case)
    layout = check_layer(model, embeddings, size).layout
    assert (layout.prefix, layout.grid) == (prefix, grid)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = _output(model, embeddings, x)
        h, w = grid
        for i, j in [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 3)]:
            moved = x.clone()
            moved[..., i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] += 1.0
            out = _output(model, embeddings, moved)
            changed = (out - base).abs().sum(-1)[0] > 1e-6  # per token
            assert changed.nonzero().flatten().tolist() == [prefix + i * w + j], (case, i, j)
            cells = (layout.to_map(out) - layout.to_map(base)).abs().sum(1)[0] > 1e-6
            assert cells.nonzero().tolist() == [[i, j]], (case, i, j)


class _PixelLogits(nn.Module):
    """A segmenter as a classifier: each class's mean logit (a target that needs every cell)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits.mean(dim=(2, 3))


def _reference_gradcam(model, layer, x, targets, prefix, grid) -> torch.Tensor:
    """Grad-CAM in float64 on tokens reshaped by hand: ReLU(sum_k mean(dy/dA_k) A_k)."""
    model = copy.deepcopy(model).double()
    kept = []
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: kept.append(out)
    )
    out = model(x.double())
    handle.remove()
    logits = out if isinstance(out, torch.Tensor) else out.logits
    score = logits[torch.arange(len(x)), targets].sum()
    (grads,) = torch.autograd.grad(score, kept[0])
    n, c = len(x), kept[0].shape[-1]

    def as_map(t):
        return t[:, prefix:, :].reshape(n, grid[0], grid[1], c).permute(0, 3, 1, 2)

    weights = as_map(grads).mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * as_map(kept[0].detach())).sum(1))


@pytest.mark.parametrize("case", sorted(CASES) + sorted(SEGFORMER))
def test_gradcam_equals_a_float64_reference_on_hand_reshaped_tokens(case):
    size, layer, prefix, grid = _grad_case(case)
    model = _build(case)
    if case in SEGFORMER:
        model, layer = _PixelLogits(model), f"model.{layer}"
    elif hf_default_layer(model) is not None:  # the wrapper: no transformers model outside
        assert hf_default_layer(model) == layer
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 2, 4])
    raw = GradCAM(model, target_layers=layer).explain(x, targets=targets.tolist()).raw
    expected = _reference_gradcam(model, layer, x, targets, prefix, grid)
    assert raw.shape == expected.shape == (3, *grid)
    assert expected.amax() > 0, "every reference map is empty: nothing compared"
    torch.testing.assert_close(raw.double(), expected, rtol=1e-3, atol=1e-4 * expected.amax())


@pytest.mark.parametrize(
    "case, why",
    [
        ("vit-wide", "ambiguous"),
        ("swin-wide", "ambiguous"),
        ("dinov2-registers", "0-2 prefix"),
        ("segformer-b0-widths", "ambiguous"),
    ],
)
def test_the_token_count_alone_does_not_tell_the_grid(case, why):
    """Without the model these layouts are refused: the config is what decides them."""
    size, layer, prefix, grid = _grad_case(case)
    model = _build(case)
    shape = tuple(_output(model, layer, torch.zeros(1, 3, *size)).shape)
    with pytest.raises(LayoutError, match=why):
        detect_layout(shape, size)
    layout = detect_layout(shape, size, model)
    assert (layout.prefix, layout.grid) == (prefix, grid)


def test_swin_declares_one_grid_per_stage_and_picks_by_token_count():
    model = _build("swin-non-square")
    assert hf_token_grids(model, (60, 44)) == [(0, (15, 11)), (0, (8, 6))]
    stage0 = "swin.encoder.layers.0.blocks.0.layernorm_before"
    assert check_layer(model, stage0, (60, 44)).layout.grid == (15, 11)


def test_segformer_declares_one_grid_per_stage():
    model = _build("segformer-non-square")
    assert hf_token_grids(model, (100, 60)) == [(0, (25, 15)), (0, (13, 8))]
    stage0 = "segformer.stages.0.layer_norm"
    assert check_layer(model, stage0, (100, 60)).layout.grid == (25, 15)


def test_models_without_tokens_declare_none():
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    assert hf_token_grids(transformers.ResNetForImageClassification(config), (64, 64)) == []
    assert hf_token_grids(nn.Sequential(nn.Conv2d(3, 4, 3)), (64, 64)) == []


def test_clip_vision_tower_inside_a_clip_model():
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    vision |= {"num_attention_heads": 2, "image_size": 32, "patch_size": 8}
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    text |= {"num_attention_heads": 2}
    config = transformers.CLIPConfig(vision_config=vision, text_config=text)
    model = transformers.CLIPModel(config)
    assert hf_token_grids(model, (32, 48)) == [(1, (4, 6))]
    assert hf_token_grids(nn.ModuleDict({"clip": model}), (32, 32)) == [(1, (4, 4))]


@pytest.mark.parametrize("case", ["vit-wide", "dinov2-registers"])
def test_cli_runs_a_save_pretrained_folder_whose_grid_only_the_config_tells(tmp_path, case):
    from click.testing import CliRunner
    from run_helpers import make_images

    from camscope.cli import main
    from camscope.run import results

    size, _layer, _prefix, grid = _grad_case(case)
    _build(case).save_pretrained(tmp_path / "model")
    make_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), "--model", str(tmp_path / "model")]
    result = CliRunner().invoke(main, [*args, "-m", "gradcam", "--sanity-images", "0"])
    assert result.exit_code == 0, result.output
    rows = results.read_table([out]).to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert {(r["raw_h"], r["raw_w"]) for r in rows} == {grid}
