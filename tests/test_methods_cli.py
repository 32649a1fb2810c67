"""The methods added for pytorch-grad-cam parity are in `camscope methods` and run from the CLI,
with their flags routed through the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

from camscope.cli import main

NEW = ["shapleycam", "finercam", "fem", "kpcacam", "segeigencam", "guidedbackprop",
       "guidedgradcam", "refinecam", "sess", "sobel"]  # fmt: skip


def test_camscope_methods_lists_them():
    result = CliRunner().invoke(main, ["methods"])
    assert result.exit_code == 0, result.output
    names = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert set(NEW) <= names


@pytest.mark.usefixtures("single_thread")
def test_camscope_run_with_the_new_methods_and_their_flags(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage.data.chelsea()).resize((96, 64)).save(photos / "cat.png")
    out = tmp_path / "out"
    args = ["run", str(photos), "--out", str(out), "--model", "resnet18", "--random-weights",
            "--methods", ",".join(NEW), "--save-maps", "npy", "--sanity-images", "0", "--quiet",
            "--sess-scales", "1", "--kpca-kernel", "rbf", "--finer-alpha", "0.5",
            "--fem-k", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in NEW:
        saved = np.load(out / name / "cat.npy")
        assert saved.ndim == 2 and np.isfinite(saved).all() and 0 <= saved.min() <= saved.max() <= 1
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert list(settings["methods"]) == NEW
