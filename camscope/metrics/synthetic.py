"""A synthetic data set with known object positions, and a small CNN trained on it.

For meta-evaluation: on real photographs nobody knows which pixels the model used, so a metric
cannot be checked against the truth. Here every image holds exactly one object of its class —
a filled shape in the class colour (class 0 red square, 1 green disk, 2 blue triangle) — on a
textured background (random gratings plus noise), with one or two distractors (the same shapes
in colours no class has: white, black, yellow). The class is decided by the object alone, so a
faithful explanation of the true class must sit on the object: ``masks`` (the object's pixels)
and ``boxes`` (its bounding box) are ground truth.

`make_shapes(n, size, seed)` draws the set (deterministic for a seed). `ShapesNet` is a 4-layer
CNN (global average pooling, so Grad-CAM on its last convolution is the CAM of Zhou et al.);
`train_shapes_net` trains it on the CPU (Adam, a fixed seed, one thread is enough);
`cached_shapes_net` keeps the weights under ``~/.cache/camscope/synthetic/`` keyed by a hash of
this module's source and the arguments, so changing the generator or the training retrains.
Weights never go into the repository.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "CLASS_COLOURS",
    "CLASSES",
    "MEAN",
    "STD",
    "ShapesNet",
    "SyntheticSet",
    "cached_shapes_net",
    "make_shapes",
    "train_shapes_net",
]

log = logging.getLogger("camscope")

CLASSES = ("red square", "green disk", "blue triangle")
CLASS_COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.15, 0.2, 0.95))
_DISTRACTOR_COLOURS = ((0.95, 0.95, 0.95), (0.05, 0.05, 0.05), (0.95, 0.9, 0.1))
#: Normalisation of the inputs: ``(x - MEAN) / STD`` per channel.
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass
class SyntheticSet:
    """A drawn set: images, labels and the ground truth of where each object is.

    ``images`` (N, H, W, 3) float32 in [0, 1]; ``labels`` (N,); ``masks`` (N, H, W) bool of the
    object; ``boxes`` (N, 4) x0, y0, x1, y1 (edges) of the object.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray

    def inputs(self) -> torch.Tensor:
        """The normalised (N, 3, H, W) float32 tensor."""
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous()
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        return (x - mean) / torch.tensor(STD).view(1, 3, 1, 1)


def _shape_mask(kind: int, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    dy, dx = yy - cy, xx - cx
    if kind == 0:
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if kind == 1:
        return dy**2 + dx**2 <= r**2
    # an upward triangle: below the apex, above the base, inside both slanted edges
    top, base = cy - r, cy + r * 0.8
    half = (dy + r) / (1.8 * r) * r
    return (yy >= top) & (yy <= base) & (np.abs(dx) <= half)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size, 3), 0.45) + rng.normal(0, 0.03, 3)
    for _ in range(3):  # three random gratings, each tinted
        angle, freq = rng.uniform(0, math.pi), rng.uniform(2, 8)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)))
        img += 0.08 * wave[..., None] * rng.uniform(0.3, 1.0, 3)
    img += rng.normal(0, 0.04, (size, size, 3))
    return img


def _place(rng, size, r, taken) -> tuple[float, float]:
    """A centre whose disk of radius ``r`` stays inside and clear of ``taken`` disks."""
    for _ in range(100):
        cy, cx = rng.uniform(r + 1, size - r - 1, 2)
        if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 2) ** 2 for y, x, q in taken):
            return cy, cx
    return cy, cx


def make_shapes(n: int, size: int = 64, *, seed: int = 0) -> SyntheticSet:
    """``n`` images of ``size`` x ``size``: one class object, 1-2 distractors, textured ground."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.zeros((n, size, size), bool)
    labels = rng.integers(0, len(CLASSES), n)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):  # a generator: one image at a time is the clearest way to draw it
        img = _background(rng, size)
        r = rng.uniform(0.11, 0.16) * size
        cy, cx = _place(rng, size, r, [])
        taken = [(cy, cx, r)]
        for _ in range(rng.integers(1, 3)):
            q = rng.uniform(0.09, 0.15) * size
            dy, dx = _place(rng, size, q, taken)
            taken.append((dy, dx, q))
            m = _shape_mask(int(rng.integers(0, 3)), size, dy, dx, q)
            img[m] = np.asarray(_DISTRACTOR_COLOURS[rng.integers(0, 3)]) + rng.normal(0, 0.03, 3)
        m = _shape_mask(int(labels[i]), size, cy, cx, r)
        img[m] = np.asarray(CLASS_COLOURS[labels[i]]) + rng.normal(0, 0.03, 3)
        masks[i] = m
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        images[i] = np.clip(img, 0, 1)
    return SyntheticSet(images, labels.astype(np.int64), masks, boxes)


class ShapesNet(nn.Module):
    """conv(16) - pool - conv(32) - pool - conv(32) - conv(32) - global average pool - linear.

    ``features`` (the last convolution block, stride 4) is the layer to explain.
    """

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
        )
        self.features = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes)."""
        return self.fc(self.features(self.body(x)).mean(dim=(2, 3)))


def train_shapes_net(
    data: SyntheticSet, *, epochs: int = 6, seed: int = 0, batch_size: int = 64
) -> ShapesNet:
    """Train a `ShapesNet` on ``data`` (Adam 3e-3, cross-entropy); returned in eval mode."""
    torch.manual_seed(seed)
    model = ShapesNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.inputs(), torch.from_numpy(data.labels)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _cache_dir() -> Path:
    root = os.environ.get("CAMSCOPE_CACHE") or Path.home() / ".cache" / "camscope"
    return Path(root) / "synthetic"


def cached_shapes_net(
    n: int = 3000, size: int = 64, *, epochs: int = 6, seed: int = 0
) -> ShapesNet:
    """`train_shapes_net` on ``make_shapes(n, size, seed)``, cached on disk by source hash."""
    source = Path(__file__).read_bytes()
    key = hashlib.sha256(source + repr((n, size, epochs, seed, torch.__version__)).encode())
    path = _cache_dir() / f"shapesnet-{key.hexdigest()[:16]}.pt"
    model = ShapesNet()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    log.info(
        "training the synthetic-shapes CNN (%d images, %d epochs); cached at %s", n, epochs, path
    )
    model = train_shapes_net(make_shapes(n, size, seed=seed), epochs=epochs, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model
