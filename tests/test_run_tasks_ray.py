"""``camscope run --task detect --ray``: a local Ray cluster gives the in-process run's objects.

Marked ``ray`` (skips without the extra unless CAMSCOPE_REQUIRE_RAY=1, as tests/test_ray.py).
The tiny detector comes from tests/task_models.py, which the workers import through
PYTHONPATH.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from run_helpers import make_images

from camscope.io import runfolder
from camscope.run import RunConfig, run_local

TESTS = Path(__file__).resolve().parent
DETECT = {
    "task": "detect",
    "model": "task_models:detector",
    "score_threshold": 0.0,
    "max_objects": 2,
    "methods": ("gradcam", "eigencam"),
    "sanity_images": 0,
    "batch_size": 2,
}


def _rows(out: Path) -> dict[tuple, dict]:
    rows = runfolder.read_table([out]).drop_columns(["run_dir"]).to_pylist()
    return {(r["name"], r["object"], r["method"]): r for r in rows}


@pytest.mark.ray
@pytest.mark.usefixtures("single_thread")
def test_detect_on_ray_equals_the_local_run(tmp_path: Path) -> None:
    if os.environ.get("CAMSCOPE_REQUIRE_RAY") == "1":
        import ray.data  # noqa: F401
    else:
        pytest.importorskip("ray.data")
    from camscope.run.ray_runner import RayOptions, ray_cluster, run_ray

    make_images(tmp_path / "in", 3)
    config = {"inputs": (str(tmp_path / "in"),), **DETECT}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' thread count: the same float32 sums
    try:
        run_local(RunConfig(out_dir=str(tmp_path / "local"), **config))
    finally:
        torch.set_num_threads(threads)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), old or ""])
    try:
        with ray_cluster(RayOptions(cpus=2)):
            got = run_ray(
                RunConfig(out_dir=str(tmp_path / "ray"), **config),
                RayOptions(workers=1, threads=1),
            )
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert (got.state, got.n_explained, got.n_failed) == ("complete", 3, 0)
    want, have = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert set(have) == set(want) and len(want) == 3 * 2 * 2
    for ident, row in want.items():
        np.testing.assert_allclose(have[ident]["raw"], row["raw"], atol=1e-6)
        np.testing.assert_allclose(have[ident]["box"], row["box"], atol=1e-4)
        name, obj, method = ident
        index = row["object_index"]
        a = np.load(runfolder.map_path(tmp_path / "local", method, name, "npy", index))
        b = np.load(runfolder.map_path(tmp_path / "ray", method, name, "npy", index))
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert (tmp_path / "ray" / "grid.png").is_file()
