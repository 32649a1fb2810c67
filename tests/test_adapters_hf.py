"""Hugging Face ``transformers`` classifiers as they come: API, defaults, CLI, pytorch-grad-cam.

Tiny random-weight models from configs (tests/hf_models.py): nothing is downloaded. The
equality tests run pytorch-grad-cam's Hugging Face recipe on the same model: its wrapper
returning ``.logits`` and a hand-written ``reshape_transform`` (class/distillation tokens
dropped, tokens laid out row-major on the patch grid).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hf_models import FAMILIES, LABELS, build
from run_helpers import ROOT, make_images

from camscope import GradCAM, load_model, wrap_module
from camscope.adapters.hf import hf_default_layer, is_hf_model
from camscope.cli import main
from camscope.methods import ClassifierOutputTarget
from camscope.models import ModelError
from camscope.run import results

pytestmark = pytest.mark.usefixtures("single_thread")


def _inputs(family: str, n: int = 2, seed: int = 1) -> torch.Tensor:
    size = FAMILIES[family][2]
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_default_layer_and_maps_without_a_wrapper(family):
    model = build(family)
    assert is_hf_model(model)
    expected = FAMILIES[family][3]
    cam = GradCAM(model, target_layers=None)  # the model itself: no wrapper, no layer
    assert cam.layer == expected
    result = cam.explain(_inputs(family), targets=[1, 3])
    assert result.maps.shape == (2, *FAMILIES[family][2])
    assert result.logits.shape == (2, 5)
    assert torch.equal(result.targets, torch.tensor([1, 3]))
    loaded = wrap_module(model)  # categories, input size and normalisation from the model
    assert loaded.categories == [LABELS[i] for i in range(5)]
    assert loaded.input_size == FAMILIES[family][2] or family in ("resnet", "regnet", "convnext")
    assert loaded.default_layer == expected
    assert any("ImageNet's mean and std" in n for n in loaded.notes)


def test_vit_last_block_output_gets_no_gradient_so_it_is_not_the_default():
    model = build("vit")
    assert hf_default_layer(model) != "vit.layers.1"  # the CLS-only head: zero patch gradients
    leaf = {}

    def keep(_m, _i, out):
        out.retain_grad()
        leaf["out"] = out

    handle = model.vit.layers[1].register_forward_hook(keep)
    model(_inputs("vit")).logits[:, 0].sum().backward()
    handle.remove()
    assert leaf["out"].grad[:, 1:].abs().max() == 0  # patch tokens: exactly zero gradient


class _LogitsWrapper(torch.nn.Module):
    """pytorch-grad-cam's HuggingfaceToTensorModelWrapper (its tutorial's recipe)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def _tokens_to_map(prefix: int, grid: tuple[int, int]):
    def reshape(x):
        patches = x[:, prefix:, :].reshape(x.shape[0], grid[0], grid[1], x.shape[2])
        return patches.transpose(2, 3).transpose(1, 2)

    return reshape


PGC_RECIPES = {  # family -> (target layer, reshape_transform) as pytorch-grad-cam's tutorial
    "vit": (lambda m: m.vit.layers[-1].layernorm_before, _tokens_to_map(1, (8, 8))),
    "deit": (lambda m: m.deit.layers[-1].layernorm_before, _tokens_to_map(2, (8, 8))),
    "beit": (lambda m: m.beit.layers[-1].layernorm_before, _tokens_to_map(1, (8, 8))),
    "swin": (lambda m: m.swin.layernorm, _tokens_to_map(0, (8, 8))),
    "resnet": (lambda m: m.resnet.encoder.stages[-1], None),
    "convnext": (lambda m: m.convnext.encoder.stages[-1], None),
}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


@pytest.mark.parametrize("family", sorted(PGC_RECIPES))
def test_equals_pytorch_grad_cam_hf_recipe(family):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as PgcTarget

    model = build(family)
    layer, reshape = PGC_RECIPES[family]
    x = _inputs(family, n=3, seed=4)
    classes = [0, 2, 4]
    with pgc.GradCAM(_LogitsWrapper(model), [layer(model)], reshape_transform=reshape) as theirs:
        expected = theirs(x, targets=[PgcTarget(c) for c in classes])
    ours = GradCAM(model, target_layers=None)(
        x, targets=[ClassifierOutputTarget(c) for c in classes]
    )
    compared = [i for i in range(3) if expected[i].max() > 0]
    assert compared, "every reference map is empty: nothing compared"
    for i in compared:
        assert _pearson(ours[i].numpy(), expected[i]) >= 0.999, (family, i)


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    build("vit").save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "size": 32})
    )
    return folder


def test_load_model_reads_a_save_pretrained_folder(vit_folder):
    loaded = load_model(str(vit_folder))
    assert loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.5, 0.5, 0.5)
    assert loaded.input_size == (32, 32) and loaded.categories[4] == "thing4"
    assert loaded.default_layer == "vit.layers.1.layernorm_before"
    assert loaded.notes == []
    same = build("vit")
    x = _inputs("vit")
    assert torch.allclose(loaded.model(x), same(x).logits)


@pytest.mark.parametrize("family", ["vit", "swin", "resnet", "efficientnet"])
def test_cli_runs_on_a_save_pretrained_folder(tmp_path, family):
    folder = tmp_path / family
    build(family).save_pretrained(folder)
    make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "in"), "-o", str(out), "--model", str(folder)]
    result = CliRunner().invoke(main, [*args, "-m", "gradcam", "--sanity-images", "0"])
    assert result.exit_code == 0, result.output
    table = results.read_table([out]).to_pylist()
    assert len(table) == 3 and {r["status"] for r in table} == {"ok"}
    assert {r["top1_name"] for r in table} <= set(LABELS.values())
    run = results.read_run(out)
    assert "ImageNet's mean and std" in json.dumps(run)  # the normalisation fallback is said


def test_hf_name_not_cached_is_one_line_and_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        load_model("hf:nobody/tiny-vit-nowhere")
    make_images(tmp_path / "in", 1)
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", "hf:nobody/x"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if "error" in ln]
    assert len(errors) == 1 and "hf download nobody/x" in errors[0], result.output


def test_import_camscope_does_not_import_transformers():
    code = "import sys, camscope, camscope.methods; print('transformers' in sys.modules)"
    env = {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_layer_without_gradient_is_refused_not_drawn(tmp_path, vit_folder, caplog):
    from camscope.methods.base import NoGradientError

    model = build("vit")
    with pytest.raises(NoGradientError, match="exactly zero"):
        cam = GradCAM(model, target_layers="vit.layers.1", refuse_no_gradient=True)
        cam.explain(_inputs("vit"), targets=[0, 1])
    # the API's default is pytorch-grad-cam's: all-zero maps, flagged empty, and one warning
    with caplog.at_level("WARNING", logger="camscope"):
        result = GradCAM(model, target_layers="vit.layers.1").explain(_inputs("vit"), [0, 1])
    assert bool(result.empty.all()) and not bool(result.maps.any())
    assert any("exactly zero" in r.getMessage() for r in caplog.records)
    make_images(tmp_path / "in", 2)
    base = ["run", str(tmp_path / "in"), "--model", str(vit_folder), "--layer", "vit.layers.1"]
    base += ["--sanity-images", "0"]
    refused = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "a"), "-m", "gradcam"])
    assert refused.exit_code == 2, refused.output
    errors = [ln for ln in refused.output.splitlines() if "error" in ln]
    assert len(errors) == 1 and "exactly zero" in errors[0]
    assert not (tmp_path / "a").exists()  # a usage error leaves nothing
    # EigenCAM reads the activations only: nothing depends on a target, so it runs
    eigen = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "b"), "-m", "eigencam"])
    assert eigen.exit_code == 0, eigen.output


def test_hf_name_read_from_the_local_cache(tmp_path):
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-vit" / "snapshots" / "0123abcd"
    build("vit").save_pretrained(snapshot)
    (snapshot / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]})
    )
    (cache / "models--someone--tiny-vit" / "refs").mkdir()
    (cache / "models--someone--tiny-vit" / "refs" / "main").write_text("0123abcd")
    code = (
        "from camscope import load_model; m = load_model('hf:someone/tiny-vit'); "
        "print(m.categories[0], m.mean, m.default_layer)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == [
        "thing0",
        "(0.1,",
        "0.2,",
        "0.3)",
        "vit.layers.1.layernorm_before",
    ], out.stderr[-2000:]


def test_explain_takes_a_hf_model_as_it_comes(tmp_path):
    import camscope

    make_images(tmp_path / "in", 2)
    result = camscope.explain(
        [tmp_path / "in"],
        tmp_path / "out",
        model=build("convnext"),
        methods=("gradcam",),
        sanity_images=0,
    )
    assert result.state == "complete" and result.n_explained == 2
    rows = results.read_table([tmp_path / "out"]).to_pylist()
    assert {r["top1_name"] for r in rows} <= set(LABELS.values())
