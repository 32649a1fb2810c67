"""Deletion with a blurred baseline in the run (``--blur-deletion``), opt-in with --metrics.

The run's per-image curve is checked against a float64 loop written from the definition
(Gaussian blur by summing the 121 shifted copies of the reflect-padded image, pixels replaced
most salient first, one forward pass per point); the mean-colour deletion must be unchanged by
the setting, a run without it must keep its settings (and hash), and resume, evaluation of an
old folder and the refusals are checked through the run's own entry points.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from camscope.cli import main
from camscope.io import iter_images, runfolder
from camscope.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel
from camscope.run import RunConfig, UsageError, run_local
from camscope.run.config import prepare
from tests.run_helpers import make_images

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 4
SIZE = (32, 32)
FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"


def _loaded() -> LoadedModel:
    """A tiny 5-class CNN with seeded weights whose probabilities move with the pixels."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return LoadedModel(
        model=model.eval(),
        name="tiny-blur-test",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        categories=["a", "b", "c", "d", "e"],
        default_layer="2",
        weights_source="seeded (tests/test_run_blur.py)",
        input_size=SIZE,
    )


def _config(folder: Path, out: str, **kw) -> RunConfig:
    base = dict(
        inputs=(str(folder),), out_dir=out, methods=("gradcam", "gradcampp"), metrics=True,
        steps=STEPS, sanity_images=0, road=False, save_maps="npy", blur_deletion=True,
    )  # fmt: skip
    return RunConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    make_images(root / "in", 2, seed=11)
    loaded = _loaded()
    with_blur = run_local(_config(root / "in", str(root / "on")), loaded=loaded)
    without = run_local(_config(root / "in", str(root / "off"), blur_deletion=False), loaded=loaded)
    assert with_blur.state == without.state == "complete"
    return root, loaded


def _blur64(x: np.ndarray) -> np.ndarray:
    """11x11 Gaussian (sigma 5) of a (3, H, W) float64 image, reflect padding, by shifted sums."""
    t = np.arange(11) - 5
    g = np.exp(-(t**2) / (2 * 5.0**2))
    g /= g.sum()
    padded = np.pad(x, ((0, 0), (5, 5), (5, 5)), mode="reflect")
    h, w = x.shape[1:]
    out = np.zeros_like(x)
    for a in range(11):
        for b in range(11):
            out += g[a] * g[b] * padded[:, a : a + h, b : b + w]
    return out


def _reference_curve(model: nn.Module, x: np.ndarray, saliency: np.ndarray, target: int):
    """p_target along deletion with the blurred baseline, float64, one image at a time."""
    model64 = _loaded().model.double()
    model64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    order = np.argsort(-saliency.ravel(), kind="stable")  # most salient first, ties by index
    blurred = _blur64(x).reshape(3, -1)
    per_step = math.ceil(saliency.size / STEPS)
    curve = []
    for k in range(STEPS + 1):
        image = x.reshape(3, -1).copy()
        gone = order[: min(k * per_step, saliency.size)]
        image[:, gone] = blurred[:, gone]
        with torch.no_grad():
            logits = model64(torch.from_numpy(image.reshape(1, *x.shape)))
        curve.append(float(logits.softmax(dim=1)[0, target]))
    return np.array(curve)


def test_the_run_measures_deletion_with_the_blurred_baseline(runs):
    root, loaded = runs
    on = {(r["name"], r["method"]): r for r in runfolder.read_table([root / "on"]).to_pylist()}
    off = {(r["name"], r["method"]): r for r in runfolder.read_table([root / "off"]).to_pylist()}
    assert set(on) == set(off) and len(on) == 4
    for (name, method), row in on.items():
        assert off[(name, method)]["deletion_blur_auc"] is None
        assert off[(name, method)]["deletion_blur_curve"] is None
        assert row["deletion_auc"] == off[(name, method)]["deletion_auc"]  # mean colour unchanged
        assert len(row["deletion_blur_curve"]) == STEPS + 1
    name, method = "img01", "gradcampp"
    row = on[(name, method)]
    (image,) = iter_images([row["file"]], size=SIZE, mean=loaded.mean, std=loaded.std)
    saliency = np.load(runfolder.map_path(root / "on", method, name))
    x = image.tensor.double().numpy()
    want = _reference_curve(loaded.model, x, saliency.astype(np.float64), row["target_index"])
    got = np.array(row["deletion_blur_curve"])
    assert np.ptp(want) > 1e-3  # the points differ: the comparison says something
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert got[0] == pytest.approx(row["base_prob"], abs=1e-7)  # point 0: the untouched image
    area = float(np.trapezoid(want, np.linspace(0, 1, STEPS + 1)))
    assert row["deletion_blur_auc"] == pytest.approx(area, abs=2e-6)


def test_settings_record_it_only_when_on(runs):
    root, loaded = runs
    on = runfolder.read_run(root / "on")["settings"]
    off = runfolder.read_run(root / "off")["settings"]
    assert on["blur_deletion"] == {"kernel_size": 11, "sigma": 5.0}
    assert "blur_deletion" not in off
    assert {k: v for k, v in on.items() if k != "blur_deletion"} == off
    header = (root / "on" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "deletion_blur_auc" in header
    assert "deletion_blur_auc" not in (root / "off" / "metrics.csv").read_text().splitlines()[0]
    report = (root / "on" / "report.md").read_text(encoding="utf-8")
    assert "Deletion AUC (blurred baseline)" in report
    assert "blurred baseline" not in (root / "off" / "report.md").read_text(encoding="utf-8")


def test_resume_of_a_run_with_the_setting(runs, tmp_path):
    root, loaded = runs
    out = tmp_path / "out"
    shutil.copytree(root / "on", out)
    before = runfolder.read_run(out)["settings_hash"]
    make_images(tmp_path / "in", 3, seed=11)  # the same two images and one more
    again = run_local(_config(tmp_path / "in", str(out)), loaded=loaded)
    assert (again.n_done_before, again.n_explained) == (2, 1)
    assert runfolder.read_run(out)["settings_hash"] == before
    rows = runfolder.read_table([out]).to_pylist()
    assert len(rows) == 6 and all(r["deletion_blur_auc"] is not None for r in rows)
    with pytest.raises(UsageError, match="blur_deletion"):  # another setting: refused
        run_local(_config(tmp_path / "in", str(out), blur_deletion=False), loaded=loaded)


def test_the_setting_needs_metrics_and_a_classification_run(tmp_path):
    with pytest.raises(UsageError, match="--blur-deletion needs --metrics"):
        RunConfig(inputs=("x",), metrics=False, blur_deletion=True).check()
    with pytest.raises(UsageError, match="--blur-deletion is for classification runs"):
        RunConfig(inputs=("x",), task="detect", metrics=True, blur_deletion=True).check()
    make_images(tmp_path / "in", 1)
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--blur-deletion"]
    result = CliRunner().invoke(main, [*args, "--model", "test_resnet", "--random-weights"])
    assert result.exit_code == 2 and "--blur-deletion needs --metrics" in result.output
    assert not (tmp_path / "out").exists()
    off = _config(tmp_path / "in", str(tmp_path / "o"), blur_deletion=False)
    assert "blur_deletion" not in prepare(off, loaded=_loaded()).settings


def test_evaluate_an_old_folder_with_the_setting(tmp_path, monkeypatch):
    """The 0.1.0 fixture (no such column in its part) is evaluated with --blur-deletion."""
    shutil.copytree(FIXTURE, tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    args = ["evaluate", "out", "--steps", "2", "--sanity-images", "0", "--blur-deletion"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    run = runfolder.read_run(Path("out"))
    assert run["settings"]["blur_deletion"] == {"kernel_size": 11, "sigma": 5.0}
    rows = runfolder.read_table([Path("out")]).to_pylist()
    assert len(rows) == 6
    for r in rows:
        assert 0 <= r["deletion_blur_auc"] <= 1 and len(r["deletion_blur_curve"]) == 3
    report = Path("out/report.md").read_text(encoding="utf-8")
    robustness = report.split("Ranking robustness")[-1]
    assert "Deletion AUC (blurred baseline)" in robustness
