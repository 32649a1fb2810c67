"""Tests for camscope.visualize: overlays, colouring and comparison grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from camscope.visualize import GridRow, colorize, method_label, overlay, save_grid


def _image(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _map(h: int = 6, w: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w)).astype(np.float32)


def _jet(value: float) -> np.ndarray:
    return np.rint(np.asarray(matplotlib.colormaps["jet"](value)[:3]) * 255)


def test_overlay_alpha_zero_is_input() -> None:
    rgb = _image()
    out = overlay(rgb, _map(), alpha=0.0)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("value", [0.0, 0.1, 0.5, 0.73, 0.999, 1.0])
def test_overlay_alpha_one_is_colormap_colour(value: float) -> None:
    cam = np.full((3, 4), value, dtype=np.float32)
    out = overlay(_image(3, 4), cam, alpha=1.0)
    expected = _jet(float(np.float32(value)))
    assert (out == expected.astype(np.uint8)).all()


def test_overlay_blend_formula() -> None:
    rgb, cam = _image(), _map()
    out = overlay(rgb, cam, alpha=0.3)
    colour = np.asarray(matplotlib.colormaps["jet"](cam))[..., :3] * 255
    expected = np.rint(0.7 * rgb + 0.3 * colour)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_overlay_other_colormap_and_clipping() -> None:
    cam = np.array([[-1.0, 2.0, np.nan]])
    out = overlay(np.zeros((1, 3, 3), np.uint8), cam, alpha=1.0, colormap="viridis")
    viridis = matplotlib.colormaps["viridis"]
    expected = np.rint(np.asarray([viridis(0.0), viridis(1.0), viridis(0.0)])[:, :3] * 255)
    np.testing.assert_array_equal(out[0], expected.astype(np.uint8))


def test_overlay_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        overlay(_image(6, 5), _map(5, 6))
    with pytest.raises(ValueError):
        overlay(_image().astype(np.float32), _map())
    with pytest.raises(ValueError):
        overlay(_image()[..., 0], _map())
    with pytest.raises(ValueError):
        overlay(_image(), _map(), alpha=1.5)


def test_colorize_matches_jet() -> None:
    cam = _map(4, 7)
    out = colorize(cam)
    assert out.dtype == np.uint8 and out.shape == (4, 7, 3)
    expected = np.rint(np.asarray(matplotlib.colormaps["jet"](cam))[..., :3] * 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    with pytest.raises(ValueError):
        colorize(np.zeros((2, 2, 2)))


def test_method_labels_come_from_the_registry() -> None:
    from camscope.methods import METHODS

    assert method_label("gradcam") == "Grad-CAM"
    assert method_label("scorecam") == "ScoreCAM"
    assert method_label("gradcampp") == "Grad-CAM++"
    for name, spec in METHODS.items():
        assert method_label(name) == spec.label
    assert method_label("mymethod") == "mymethod"


def _rows(n: int) -> list[GridRow]:
    rows = []
    for i in range(n):
        rgb = _image(16, 16, seed=i)
        rows.append(
            GridRow(
                title=f"tabby cat (p=0.8{i}) costs $5",
                image=rgb,
                overlays={"gradcam": overlay(rgb, _map(16, 16, seed=i)), "scorecam": None},
                notes={"scorecam": "failed: out of memory"} if i == 0 else {},
            )
        )
    return rows


def test_save_grid_pages(tmp_path: Path) -> None:
    methods = ["gradcam", "scorecam", "ablationcam"]
    out = tmp_path / "run"
    paths = save_grid(out, _rows(3), methods, rows_per_file=2)
    assert paths == [out / "grid.png", out / "grid-2.png"]
    assert sorted(p.name for p in out.iterdir()) == ["grid-2.png", "grid.png"]  # no temp files
    with Image.open(paths[0]) as first, Image.open(paths[1]) as second:
        first.load()
        second.load()
        # 4 columns of ~2.2 inch at 100 dpi; the first page has two rows, the second one.
        assert 4 * 220 <= first.width <= 4 * 250
        assert first.width == second.width
        assert first.height > second.height >= 220
        arr = np.asarray(first.convert("RGB"))
        assert arr.std() > 10  # something was drawn


def test_save_grid_stem_and_empty(tmp_path: Path) -> None:
    assert save_grid(tmp_path, [], ["gradcam"]) == []
    assert list(tmp_path.iterdir()) == []
    paths = save_grid(tmp_path, _rows(1), ["gradcam"], stem="compare")
    assert paths == [tmp_path / "compare.png"]
    with pytest.raises(ValueError):
        save_grid(tmp_path, _rows(1), ["gradcam"], rows_per_file=0)
