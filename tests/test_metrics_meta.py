"""Meta-evaluation, fast version: on synthetic shapes with known object positions, a tiny CNN
trained here (seconds, one thread) must be explained better by Grad-CAM of the true class than
by known-wrong maps, according to every faithfulness and localisation metric that
benchmarks/meta_eval.py finds reliable. A broken metric (sign, ranking, imputation) or a broken
Grad-CAM fails it. The full table is in EVALUATION.md.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camscope import GradCAM
from camscope.metrics import (
    auc,
    deletion_curve,
    insertion_curve,
    paired_difference,
    pointing_game,
    relevance_mass,
    relevance_rank,
    road,
)
from camscope.metrics.synthetic import make_shapes, train_shapes_net


@pytest.fixture(scope="module")
def setup():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_shapes_net(make_shapes(500, 32, seed=0), epochs=4, seed=0)
        test = make_shapes(30, 32, seed=99)
        x, labels = test.inputs(), torch.from_numpy(test.labels)
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == labels).float().mean())
        cam = GradCAM(model, target_layers="features")
        true = torch.as_tensor(cam(x, targets=labels))
        other = torch.as_tensor(cam(x, targets=(labels + 1) % 3))
        g = torch.Generator().manual_seed(0)
        perm = torch.argsort(torch.rand(len(x), 32 * 32, generator=g), dim=1)
        shuffled = true.flatten(1).gather(1, perm).view_as(true)
        coarse = torch.rand(len(x), 1, 8, 8, generator=g)
        random = F.interpolate(coarse, size=(32, 32), mode="bilinear")[:, 0]
        maps = {"true": true, "other": other, "shuffled": shuffled, "random": random}
        yield model, x, labels, torch.from_numpy(test.masks), maps, accuracy
    finally:
        torch.set_num_threads(threads)


def _scores(model, x, labels, masks, m):
    r = road(
        model, x, m, labels, fractions=(0.2, 0.5, 0.8), generator=torch.Generator().manual_seed(0)
    )
    return {
        "deletion_auc": -auc(deletion_curve(model, x, m, labels, steps=8)),
        "insertion_auc": auc(insertion_curve(model, x, m, labels, steps=8)),
        "road_morf": -r.morf_mean,
        "road_combined": r.combined,
        "pointing_game": pointing_game(m, masks, tolerance=2),
        "relevance_mass": relevance_mass(m, masks),
        "relevance_rank": relevance_rank(m, masks),
    }


def test_metrics_rank_the_true_explanation_first(setup):
    model, x, labels, masks, maps, accuracy = setup
    assert accuracy >= 0.9  # the model learnt the shapes: the ground truth is meaningful
    scores = {k: _scores(model, x, labels, masks, m) for k, m in maps.items()}
    failures = []
    for metric in scores["true"]:
        for wrong in ("other", "shuffled", "random"):
            a = scores["true"][metric].double().numpy()
            b = scores[wrong][metric].double().numpy()
            d = paired_difference(a, b, resamples=2000)
            if not (d.mean > 0 and d.significant):
                failures.append(
                    f"{metric}: true vs {wrong}: {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
                )
    assert not failures, failures


def test_a_broken_metric_is_caught(setup):
    """Sanity of the test itself: deletion with the ranking reversed fails it."""
    model, x, labels, masks, maps, _ = setup
    broken = {k: -auc(deletion_curve(model, x, 1 - m, labels, steps=8)) for k, m in maps.items()}
    d = paired_difference(broken["true"].double().numpy(), broken["random"].double().numpy())
    assert not (d.mean > 0 and d.significant)
    assert np.isfinite(d.mean)
