"""Tests for camscope.evaluate on a small run folder written by hand (tiny model, fake CAMs)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import camscope.methods
from camscope import evaluate as E
from camscope import io as imageio
from camscope import metrics as M

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
SIZE = 32
METHODS = ["gradcam", "ablationcam", "scorecam"]


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyNet(nn.Module):
    """2-conv classifier with 1000 outputs (so ImageNet wnids in file names give the truth)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 1000)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class FakeCAM:
    """Stands in for camscope.methods classes: gradient maps, or a fixed map for 'scorecam'."""

    calls: list[tuple[str, str, dict]] = []

    def __init__(self, name: str, model: nn.Module, layer: str, **kwargs) -> None:
        self.name, self.model = name, model
        FakeCAM.calls.append((name, layer, kwargs))

    def __enter__(self) -> FakeCAM:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.name == "scorecam":  # independent of the model: must fail the sanity check
            return torch.linspace(0, 1, SIZE * SIZE).view(1, SIZE, SIZE).repeat(len(inputs), 1, 1)
        x = inputs.clone().requires_grad_(True)
        score = self.model(x).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
        g = grad.abs().amax(dim=1)
        return g / g.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]


@pytest.fixture
def fake_methods(monkeypatch):
    FakeCAM.calls = []
    fake = {m: (lambda *a, _m=m, **k: FakeCAM(_m, *a, **k)) for m in METHODS}
    monkeypatch.setattr(camscope.methods, "METHODS", fake)
    return FakeCAM


def _loaded(model: nn.Module) -> SimpleNamespace:
    return SimpleNamespace(
        model=model,
        mean=MEAN,
        std=STD,
        categories=[f"cat{i}" for i in range(1000)],
        default_layer="conv2",
    )


NAMES = ["n01440764_tench", "n01443537_fish", "plain <&> photo", "gone"]


def make_run(tmp: Path, model: nn.Module) -> Path:
    """A run folder in the DESIGN.md layout: 4 images (one missing on disk), 3 methods."""
    run_dir = tmp / "run"
    run_dir.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for k, name in enumerate(NAMES):
        file = tmp / "images" / f"{name}.png"
        file.parent.mkdir(exist_ok=True)
        rgb = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        if name != "gone":
            Image.fromarray(rgb).save(file)
        small, x = imageio.preprocess(Image.fromarray(rgb), size=(SIZE, SIZE), mean=MEAN, std=STD)
        with torch.no_grad():
            probs = model(x[None]).softmax(1)[0]
        top1 = int(probs.argmax())
        target = top1 if k != 1 else 0  # image 1 explains class 0 (its truth), not top-1
        rows.append(
            {"name": name, "file": str(file), "top1_index": top1, "top1_name": f"cat{top1}",
             "top1_prob": f"{float(probs[top1]):.6f}", "target_index": target,
             "target_name": f"cat{target}", "model": "tiny", "layer": "conv2", "empty_maps": ""}
        )  # fmt: skip
        for j, m in enumerate(METHODS):
            (run_dir / m).mkdir(exist_ok=True)
            cam = rng.random((SIZE, SIZE)).astype(np.float32)
            if (k, m) == (0, "scorecam"):
                cam[:] = 0  # an empty map
            if (k, m) == (2, "ablationcam"):
                continue  # a missing map
            np.save(run_dir / m / f"{name}.npy", cam)
            Image.fromarray(np.full((SIZE, SIZE, 3), 60 * j, np.uint8)).save(
                run_dir / m / f"{name}.png"
            )
    with (run_dir / "predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = {
        "model": "tiny", "weights_source": "test", "weights_file": None, "weights_tag": None,
        "layer": "conv2", "device": "cpu", "methods": METHODS, "scorecam_variant": "reference",
        "image_size": [SIZE, SIZE], "mean": list(MEAN), "std": list(STD), "n_images": 4,
    }  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(run))
    return run_dir


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_run_end_to_end(tmp_path, fake_methods):
    model = TinyNet()
    run_dir = make_run(tmp_path, model)
    result = E.evaluate_run(
        run_dir, steps=8, batch_size=16, sanity_images=2, loaded_model=_loaded(model)
    )
    assert result.names == NAMES[:3]  # "gone" could not be loaded
    assert any(n.startswith("gone: image not evaluated") for n in result.notes)
    assert any("ablationcam map not evaluated" in n for n in result.notes)
    for name in ("metrics.csv", "agreement.csv", "summary.csv", "sanity.csv", "curves.npz"):
        assert (run_dir / name).is_file()
    for name in ("curves.png", "distributions.png", "report.md", "report.html"):
        assert (run_dir / name).stat().st_size > 0
    info = json.loads((run_dir / "evaluation.json").read_text())
    assert info["images"] == 3 and info["steps"] == 8 and info["sanity_images"] == 2
    assert info["engine"].endswith("fp32") and info["notes"] == result.notes
    stages = info["seconds"]
    assert set(stages) >= {"faithfulness", "total"} and stages["total"] >= stages["faithfulness"]
    assert result.files["evaluation.json"] == run_dir / "evaluation.json"

    # metrics.csv == camscope.metrics on the same images, recomputed independently
    rows = _read(run_dir / "metrics.csv")
    assert len(rows) == 3 * 3 - 1
    images = [
        imageio.preprocess(
            imageio.load_image(tmp_path / "images" / f"{n}.png"),
            size=(SIZE, SIZE),
            mean=MEAN,
            std=STD,
        )[1]
        for n in NAMES[:3]
    ]
    preds = _read(run_dir / "predictions.csv")
    inputs = torch.stack(images)
    targets = torch.tensor([int(p["target_index"]) for p in preds[:3]])
    maps = torch.stack(
        [torch.from_numpy(np.load(run_dir / "gradcam" / f"{n}.npy")) for n in NAMES[:3]]
    )
    ref = M.faithfulness(model, inputs, maps, targets, mean=MEAN, std=STD, steps=8)
    g_rows = [r for r in rows if r["method"] == "gradcam"]
    for i, r in enumerate(g_rows):
        assert float(r["deletion_auc"]) == pytest.approx(float(ref.deletion_auc[i]), abs=1e-5)
        assert float(r["insertion_auc"]) == pytest.approx(float(ref.insertion_auc[i]), abs=1e-5)
        assert float(r["average_drop_pct"]) == pytest.approx(
            100 * float(ref.average_drop[i]), abs=1e-3
        )
        assert int(r["increase"]) == int(ref.increase[i])
    s_maps = torch.stack(
        [torch.from_numpy(np.load(run_dir / "scorecam" / f"{n}.npy")) for n in NAMES[:3]]
    )
    assert float(g_rows[1]["pearson_scorecam"]) == pytest.approx(
        float(M.pearson(maps, s_maps)[1]), abs=1e-5
    )

    # ground truth from wnids: image 0 is class 0, image 1 class 1, image 2 unknown
    assert [r["truth_index"] for r in g_rows] == ["0", "1", ""]
    assert g_rows[2]["correct"] == ""
    s_rows = {r["image"]: r for r in rows if r["method"] == "scorecam"}
    assert s_rows[NAMES[0]]["empty"] == "1" and s_rows[NAMES[1]]["empty"] == "0"

    agreement = _read(run_dir / "agreement.csv")
    assert {(r["method_a"], r["method_b"]) for r in agreement} == {
        ("gradcam", "ablationcam"), ("gradcam", "scorecam"), ("ablationcam", "scorecam")
    }  # fmt: skip
    assert len(agreement) == 3 + 2 + 2

    summary = {r["method"]: r for r in _read(run_dir / "summary.csv")}
    assert summary["gradcam"]["n"] == "3" and summary["ablationcam"]["n"] == "2"
    m, lo, hi = M.mean_ci(ref.deletion_auc)
    assert float(summary["gradcam"]["deletion_auc_mean"]) == pytest.approx(m, abs=1e-5)
    assert float(summary["gradcam"]["deletion_auc_ci_low"]) == pytest.approx(lo, abs=1e-5)
    assert float(summary["scorecam"]["empty_maps_pct"]) == pytest.approx(100 / 3, abs=1e-3)
    assert summary["scorecam"]["sanity_pass"] == "fail"  # fixed map: model-independent
    assert summary["gradcam"]["sanity_pass"] == "pass"

    sanity = _read(run_dir / "sanity.csv")
    assert [r["block"] for r in sanity if r["method"] == "gradcam"] == ["fc", "conv2", "conv1"]
    assert all(
        float(r["mean_spearman"]) == pytest.approx(1.0) for r in sanity if r["method"] == "scorecam"
    )
    score_calls = [c for c in fake_methods.calls if c[0] == "scorecam"]
    assert score_calls and all(
        c[1] == "conv2" and c[2] == {"variant": "reference", "max_channels": 64}
        for c in score_calls
    )

    npz = np.load(run_dir / "curves.npz")
    assert npz["gradcam_deletion"].shape == (3, 9)
    np.testing.assert_allclose(npz["gradcam_deletion"], ref.deletion_curve.numpy(), atol=1e-6)
    assert npz["ablationcam_rows"].tolist() == [0, 1]

    md = (run_dir / "report.md").read_text()
    assert "The map of ScoreCAM is empty (all zero)" in md
    assert (
        "The maps explain class cat0, not the top-1 prediction." in md
        or preds[1]["top1_index"] == "0"
    )
    assert "max_channels" in md
    html_text = (run_dir / "report.html").read_text()
    assert "plain &lt;&amp;&gt; photo" in html_text and "https://" not in html_text
    # plots + per image the input and 3 overlays, less the missing AblationCAM overlay
    assert html_text.count("<img ") == 2 + 3 * 4 - 1


def test_evaluate_with_labels_file_and_no_sanity(tmp_path, fake_methods):
    model = TinyNet()
    run_dir = make_run(tmp_path, model)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\nplain <&> photo.png,5\nn01440764_tench.png,n01443537\n")
    result = E.evaluate_run(
        run_dir, steps=4, sanity_images=0, labels=labels, loaded_model=_loaded(model)
    )
    assert result.sanity == {} and fake_methods.calls == []
    truth = {e.name: e.truth_index for e in result.report.images}
    assert truth == {NAMES[0]: 1, NAMES[1]: None, NAMES[2]: 5}
    summary = _read(run_dir / "summary.csv")
    assert all(r["sanity_pass"] == "" for r in summary)
    assert "Not run." in (run_dir / "report.md").read_text()


def test_evaluate_with_real_methods(tmp_path):
    """The real camscope.methods classes on the tiny model (sanity check included)."""
    model = TinyNet()
    run_dir = make_run(tmp_path, model)
    result = E.evaluate_run(run_dir, steps=4, sanity_images=2, loaded_model=_loaded(model))
    for m in METHODS:
        steps = result.sanity[m]
        assert [s.block for s in steps] == ["fc", "conv2", "conv1"]
        assert all(math.isfinite(s.mean_abs) for s in steps)
