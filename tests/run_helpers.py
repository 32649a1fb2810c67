"""Shared helpers for the tests of camscope/run/: small images and a tiny random model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: timm's 0.47M-parameter test ResNet with seeded random weights: fast, offline.
MODEL = ["--model", "test_resnet", "--random-weights"]


def make_images(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """``n`` 48x64 RGB PNGs with smooth blobs (distinct content, so distinct keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:64]
    paths = []
    for i in range(n):
        cy, cx = rng.uniform(8, 40), rng.uniform(8, 56)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 120.0)
        rgb = np.stack([blob * rng.uniform(80, 255), 1 - blob, rng.random((48, 64))], axis=-1)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(
            np.clip(rgb * 255 if rgb.max() <= 1 else rgb, 0, 255).astype(np.uint8)
        ).save(path)
        paths.append(path)
    return paths


def env() -> dict[str, str]:
    """Environment for a camscope subprocess: this checkout's code, one torch thread."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def camscope(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m camscope.cli ARGS`` and wait (text output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "camscope.cli", *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )
