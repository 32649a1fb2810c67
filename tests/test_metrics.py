"""Tests for camscope.metrics against slow, obviously-correct references."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from camscope import metrics as M

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


pytestmark = pytest.mark.usefixtures("single_thread")


class TinyNet(nn.Module):
    """2-conv classifier for 32x32 inputs, 5 classes, fixed seed."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.bn1.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
            self.bn1.running_var.copy_(torch.rand(8, generator=g) + 0.5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


class MeanLogit(nn.Module):
    """logits = [a * mean(x), 0]: p_0 = sigmoid(a * mean(x)), known in closed form."""

    def __init__(self, a: float = 3.0) -> None:
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3)) * self.a
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def _data(n: int = 3, size: int = 32, seed: int = 0, ties: bool = True):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 3, size, size, generator=g)
    inputs = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    maps = torch.rand(n, size, size, generator=g)
    if ties:  # quantise so the stable tie-break matters
        maps = (maps * 4).round() / 4
    targets = torch.arange(n) % 5
    return inputs, maps, targets


# ---------------------------------------------------------------------------- reference helpers


def _prob64(model: nn.Module, image: np.ndarray, target: int) -> float:
    """p_c of one (3, H, W) float64 image with a float64 copy of the model."""
    with torch.no_grad():
        logits = model(torch.from_numpy(image)[None])
    return float(torch.softmax(logits, dim=1)[0, target])


def _order(saliency: np.ndarray) -> list[int]:
    """Flat pixel indices by decreasing saliency, ties by lower index: a plain Python sort."""
    flat = saliency.ravel().tolist()
    return sorted(range(len(flat)), key=lambda i: (-flat[i], i))


def _blur_reference(image: np.ndarray, k: int = 11, sigma: float = 5.0) -> np.ndarray:
    t = np.arange(k) - k // 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    kern = np.outer(g, g) / np.outer(g, g).sum()
    pad = k // 2
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    h, w = image.shape[1:]
    out = np.zeros_like(image)
    for dy in range(k):
        for dx in range(k):
            out += kern[dy, dx] * padded[:, dy : dy + h, dx : dx + w]
    return out


def _curve_reference(model, image, saliency, target, steps, mode):
    """Deletion/insertion by a plain loop: change pixels one at a time, evaluate each step."""
    h, w = saliency.shape
    per_step = math.ceil(h * w / steps)
    order = _order(saliency)
    blurred = _blur_reference(image)
    current = blurred.copy() if mode == "insertion" else image.copy()
    probs = [_prob64(model, current, target)]
    done = 0
    for _ in range(steps):
        for idx in order[done : done + per_step]:
            y, x = divmod(idx, w)
            source = {"deletion": 0.0 * image, "deletion-blur": blurred, "insertion": image}[mode]
            current[:, y, x] = source[:, y, x]
        done += per_step
        probs.append(_prob64(model, current, target))
    return np.array(probs)


# ---------------------------------------------------------------------------- faithfulness


def test_average_drop_increase_by_hand():
    model = MeanLogit(3.0)
    inputs, maps, targets = _data(n=4)
    targets = torch.zeros(4, dtype=torch.long)
    maps[1] = 1.0  # explanation = image: no drop, no increase
    out = M.average_drop_increase(model, inputs, maps, targets, mean=MEAN, std=STD, batch_size=3)
    mean = np.array(MEAN).reshape(3, 1, 1)
    std = np.array(STD).reshape(3, 1, 1)
    for i in range(4):
        x = inputs[i].double().numpy()
        pixels = x * std + mean
        expl = (pixels * maps[i].double().numpy()[None] - mean) / std
        y = 1 / (1 + math.exp(-3.0 * x.mean()))
        o = 1 / (1 + math.exp(-3.0 * expl.mean()))
        assert out.base_prob[i].item() == pytest.approx(y, abs=1e-6)
        assert out.explanation_prob[i].item() == pytest.approx(o, abs=1e-6)
        assert out.average_drop[i].item() == pytest.approx(max(0.0, y - o) / y, abs=1e-5)
        assert bool(out.increase[i]) == (o > y)
    assert out.average_drop[1].item() == pytest.approx(0.0, abs=1e-6)
    assert not bool(out.increase[1])


def test_explanation_with_zero_map_is_black_image():
    inputs, maps, _ = _data(n=1)
    expl = M.explanation_inputs(inputs, torch.zeros_like(maps), mean=MEAN, std=STD)
    black = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(expl[0, :, 5, 7], black)


@pytest.mark.parametrize("mode", ["deletion", "deletion-blur", "insertion"])
def test_curves_match_pixel_loop_reference(mode):
    torch.manual_seed(0)
    model = TinyNet()
    model64 = TinyNet().double().eval()
    inputs, maps, targets = _data(n=2, size=16)
    steps = 7  # 256 pixels -> 37 per step, the last step clamps at all pixels
    fn = {
        "deletion": M.deletion_curve,
        "deletion-blur": functools.partial(M.deletion_curve, baseline="blur"),
        "insertion": M.insertion_curve,
    }[mode]
    curves = fn(model, inputs, maps, targets, steps=steps, batch_size=5)
    assert curves.shape == (2, steps + 1)
    for i in range(2):
        ref = _curve_reference(
            model64, inputs[i].double().numpy(), maps[i].numpy(), int(targets[i]), steps, mode
        )
        np.testing.assert_allclose(curves[i].numpy(), ref, atol=2e-5)


def test_deletion_baseline_is_checked():
    inputs, maps, targets = _data(n=1)
    with pytest.raises(ValueError, match="baseline"):
        M.deletion_curve(TinyNet(), inputs, maps, targets, baseline="noise")


def test_gaussian_blur_matches_reference():
    inputs, _, _ = _data(n=2, size=20)
    ours = M.gaussian_blur(inputs).double().numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], _blur_reference(inputs[i].double().numpy()), atol=1e-5)


def test_auc_matches_numpy_trapezoid():
    curves = torch.rand(4, 51, generator=torch.Generator().manual_seed(1))
    ours = M.auc(curves)
    x = np.linspace(0, 1, 51)
    ref = [np.trapezoid(c, x) for c in curves.double().numpy()]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


def test_faithfulness_consistent_with_parts_and_batch_size():
    model = TinyNet()
    inputs, maps, targets = _data(n=3)
    f = M.faithfulness(model, inputs, maps, targets, mean=MEAN, std=STD, steps=10, batch_size=4)
    g = M.faithfulness(model, inputs, maps, targets, mean=MEAN, std=STD, steps=10, batch_size=64)
    for name in ("deletion_curve", "insertion_curve", "average_drop", "base_prob"):
        torch.testing.assert_close(getattr(f, name), getattr(g, name), atol=1e-6, rtol=1e-5)
    assert f.steps == 10
    # step 0 of deletion and the last insertion step are the untouched image.
    torch.testing.assert_close(f.deletion_curve[:, 0], f.base_prob)
    torch.testing.assert_close(f.insertion_curve[:, -1], f.base_prob)
    full = M.deletion_curve(model, inputs, maps, targets, steps=10)  # computes step 0 itself
    torch.testing.assert_close(full, f.deletion_curve, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(f.deletion_auc, M.auc(f.deletion_curve))
    assert f.increase.dtype == torch.bool
    ins = M.insertion_curve(model, inputs, maps, targets, steps=10)
    torch.testing.assert_close(ins, f.insertion_curve, atol=1e-6, rtol=1e-5)


def test_step_sensitivity_runs():
    model = TinyNet()
    inputs, maps, targets = _data(n=2)
    s = M.step_sensitivity(model, inputs, maps, targets, steps=8, fine_pixels_per_step=16)
    assert s.fine_steps == 64 and s.steps == 8
    assert s.deletion_abs_diff.shape == (2,)
    assert torch.all(s.insertion_abs_diff < 0.2)


def test_saliency_rank_ties_stable():
    maps = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])
    assert M.saliency_rank(maps).tolist() == [[[2, 0], [3, 1]]]


# ---------------------------------------------------------------------------- agreement


def test_pearson_and_spearman_match_scipy():
    g = torch.Generator().manual_seed(2)
    a = (torch.rand(3, 8, 8, generator=g) * 5).round() / 5  # many ties
    b = a * 0.5 + torch.rand(3, 8, 8, generator=g) * 0.5
    b = (b * 5).round() / 5
    for i in range(3):
        x, y = a[i].ravel().numpy(), b[i].ravel().numpy()
        assert M.pearson(a, b)[i].item() == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-6)
        assert M.spearman(a, b)[i].item() == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-6)
        np.testing.assert_allclose(
            M.average_ranks(a[i].reshape(1, -1))[0].numpy(), stats.rankdata(x), atol=1e-12
        )


def test_constant_map_correlation_is_zero_not_nan():
    a = torch.zeros(2, 4, 4)
    b = torch.rand(2, 4, 4)
    assert M.pearson(a, b).tolist() == [0.0, 0.0]
    assert M.spearman(b, a).tolist() == [0.0, 0.0]


def test_top_iou_matches_set_reference():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(3, 10, 10, generator=g) * 3).round()
    b = (torch.rand(3, 10, 10, generator=g) * 3).round()
    ours = M.top_iou(a, b, fraction=0.2)
    for i in range(3):
        k = round(0.2 * 100)
        sa = set(_order(a[i].numpy())[:k])
        sb = set(_order(b[i].numpy())[:k])
        assert ours[i].item() == pytest.approx(len(sa & sb) / len(sa | sb))
    assert M.top_iou(a, a).tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------- sanity check


def _gradient_explain(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    x = inputs.clone().requires_grad_(True)
    score = model(x).gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad.abs().amax(dim=1)


def test_sanity_fixed_map_fails_and_gradient_passes():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, fixed, targets = _data(n=4, ties=False)
    blocks = M.randomization_blocks(model, inputs[:1])
    assert blocks == ["fc", "conv2", "conv1+bn1"]

    steps = M.sanity_check(model, lambda m, x, t: fixed, inputs, targets)
    assert [s.block for s in steps] == blocks
    assert all(s.mean == pytest.approx(1.0) for s in steps)
    assert not M.passes_sanity(steps)

    grad_steps = M.sanity_check(model, _gradient_explain, inputs, targets, seed=0)
    assert grad_steps[-1].mean_abs < 0.5 and M.passes_sanity(grad_steps)
    assert grad_steps[-1].spearman.shape == (4,)
    assert grad_steps[-1].n_reset == grad_steps[-1].n_params == 4  # conv1 w, b, bn1 w, b
    for k, v in model.state_dict().items():  # the original model is untouched
        torch.testing.assert_close(v, before[k])
    again = M.sanity_check(model, _gradient_explain, inputs, targets, seed=0)
    torch.testing.assert_close(again[-1].spearman, grad_steps[-1].spearman)  # reproducible


def test_sanity_cascade_is_cumulative_and_resets_bn_stats():
    model = TinyNet()
    inputs, _, targets = _data(n=2)
    seen = []

    def explain(m, x, t):
        seen.append(
            (
                torch.equal(m.fc.weight, model.fc.weight),
                torch.equal(m.conv1.weight, model.conv1.weight),
                float(m.bn1.running_var.mean()),
            )
        )
        return torch.rand(len(x), 32, 32)

    M.sanity_check(model, explain, inputs, targets)
    assert [s[:2] for s in seen] == [(True, True), (False, True), (False, True), (False, False)]
    assert seen[-1][2] == 1.0  # BatchNorm running stats reset


def test_randomization_blocks_resnet_and_efficientnet():
    import timm
    import torchvision

    resnet = torchvision.models.resnet18(weights=None).eval()
    assert M.randomization_blocks(resnet, torch.zeros(1, 3, 64, 64)) == [
        "fc", "layer4.1", "layer4.0", "layer3", "layer2", "layer1", "conv1+bn1",
    ]  # fmt: skip
    eff = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert M.randomization_blocks(eff, torch.zeros(1, 3, 64, 64)) == [
        "classifier", "conv_head+bn2", *(f"blocks.{i}" for i in range(6, -1, -1)),
        "conv_stem+bn1",
    ]  # fmt: skip
    wrapped = nn.Sequential(TinyNet())  # single-child wrappers are looked through
    assert M.randomization_blocks(wrapped, torch.zeros(1, 3, 32, 32)) == [
        "0.fc", "0.conv2", "0.conv1+0.bn1",
    ]  # fmt: skip


def test_passes_sanity_rule():
    def step(values):
        return M.SanityStep.from_values("b", torch.tensor(values), 1, 1)

    assert M.passes_sanity([step([0.9, 0.9]), step([0.4, -0.45])])
    assert not M.passes_sanity([step([0.1]), step([0.6, -0.6])])
    assert not M.passes_sanity([step([float("nan")])])
    with pytest.raises(ValueError):
        M.passes_sanity([])


# ---------------------------------------------------------------------------- statistics


def test_mean_ci_matches_scipy():
    values = [0.1, 0.4, 0.35, 0.8, 0.2]
    m, lo, hi = M.mean_ci(values)
    ref = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert m == pytest.approx(np.mean(values))
    assert (lo, hi) == pytest.approx(ref)
    m1, lo1, hi1 = M.mean_ci(torch.tensor([0.3]))
    assert m1 == pytest.approx(0.3) and math.isnan(lo1) and math.isnan(hi1)
    assert M.mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in M.mean_ci([]))


# ---------------------------------------------------------------------------- labels


def test_truth_from_filename_and_accuracy():
    assert M.truth_from_filename("n01440764_tench.JPEG") == 0
    assert M.truth_from_filename("/x/y/ILSVRC2012_val_00000001_n01751748.png") == 65
    assert M.truth_from_filename("cat.jpg") is None
    assert M.truth_from_filename("n99999999.jpg") is None  # not an ImageNet-1k wnid
    assert M.accuracy([1, 2, 3], [1, None, 4]) == 0.5
    assert math.isnan(M.accuracy([1], [None]))
    assert M.accuracy(torch.tensor([1, 2]), torch.tensor([1, 2])) == 1.0


def test_load_labels_formats(tmp_path):
    shared = tmp_path / "labels.csv"
    shared.write_text(
        "file,class_index,wnid,category\n"
        "n01440764_tench.JPEG,0,n01440764,tench\n"
        "n01443537_goldfish.JPEG,1,n01443537,goldfish\n"
    )
    assert M.load_labels(shared) == {"n01440764_tench.JPEG": 0, "n01443537_goldfish.JPEG": 1}
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("Name,Class\na.jpg,207\nb.jpg,n01443537\nc.jpg,Golden Retriever\n")
    assert M.load_labels(mixed) == {"a.jpg": 207, "b.jpg": 1, "c.jpg": 207}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.jpg,crane\n")
    with pytest.raises(ValueError, match="ambiguous"):
        M.load_labels(bad)
    labels = M.load_labels(shared)
    assert M.lookup_label(labels, "/data/n01440764_tench.JPEG") == 0
    assert M.lookup_label(labels, "", "n01443537_goldfish") == 1
    assert M.lookup_label(labels, "other.png") is None
