"""`camscope run --ray`: a local Ray cluster gives the in-process run's results, on loopback only.

The cluster tests are marked ``ray`` (``pytest -m ray`` selects them, ``-m "not ray"`` skips
them) and skip when the optional extra is not installed, unless ``CAMSCOPE_REQUIRE_RAY=1`` (as
in ``.ci/run``) makes that a failure. The checks that the plain install never
imports Ray run everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from camscope.run.ray_runner import (
    DECODE_CPUS,
    ClusterInfo,
    RayOptions,
    actor_resources,
    parse_address,
)

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


# ---------------------------------------------------------------------------------------------
# Without Ray
# ---------------------------------------------------------------------------------------------


def test_plain_install_never_imports_ray(tmp_path: Path) -> None:
    """`import camscope, camscope.cli` and a whole plain run leave ray out of sys.modules."""
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(tmp_path / "grey.png")
    code = f"""
import sys
import camscope, camscope.cli
assert "ray" not in sys.modules, "import camscope imported ray"
from camscope.cli import main
try:
    main(["run", {str(tmp_path / "grey.png")!r}, "--out", {str(tmp_path / "out")!r},
          "--model", "test_resnet", "--random-weights", "--methods", "gradcam", "--quiet"],
         standalone_mode=False)
except SystemExit as exc:
    assert not exc.code, exc.code
print("ray" in sys.modules, sorted(m for m in sys.modules if m.split(".")[0] == "ray")[:3])
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "False", proc.stdout
    assert (tmp_path / "out" / "gradcam" / "grey.npy").is_file()


@pytest.mark.parametrize("text", [None, "local", "auto", "10.0.0.5:6379", "ray://head:10001"])
def test_parse_address_accepts(text: str | None) -> None:
    assert parse_address(text) == text


@pytest.mark.parametrize("text", ["images/", "photo.jpg", "head", "http://x:1", "a:b"])
def test_parse_address_refuses_what_is_not_an_address(text: str) -> None:
    with pytest.raises(ValueError, match="not a Ray address"):
        parse_address(text)


def _info(cpus: float, gpus: float = 0.0, nodes: int = 1, node_cpus: float | None = None):
    return ClusterInfo(cpus, gpus, nodes, node_cpus or cpus, True, "127.0.0.1")


def test_actor_resources_share_cpus_and_give_one_gpu_each() -> None:
    cpu = actor_resources(_info(8), 2)
    assert cpu.num_gpus == 0 and cpu.device == "cpu" and cpu.threads == 4
    assert cpu.num_cpus * 2 + DECODE_CPUS == pytest.approx(8)  # everything, nothing more
    assert actor_resources(_info(8), 2, threads=1).threads == 1
    # two 4-CPU nodes: one actor cannot take more than a node holds
    assert actor_resources(_info(8, nodes=2, node_cpus=4), 1).num_cpus == 4 - DECODE_CPUS
    gpu = actor_resources(_info(16, gpus=4), 4)
    assert (gpu.num_gpus, gpu.device) == (1.0, "cuda")
    assert actor_resources(_info(16, gpus=4), 4, device="cuda:1").device == "cuda"
    assert actor_resources(_info(16, gpus=4), 2, device="cpu").num_gpus == 0
    with pytest.raises(ValueError, match="no GPU"):
        actor_resources(_info(8), 1, device="cuda")
    with pytest.raises(ValueError, match="GPU"):
        actor_resources(_info(16, gpus=2), 3)
    with pytest.raises(ValueError, match="workers"):
        actor_resources(_info(2), 0)


def test_decode_batch_gives_io_pixels_and_one_line_errors(tmp_path: Path) -> None:
    from PIL import Image

    from camscope.io import load_image, resize_rgb
    from camscope.run.ray_runner import decode_batch, plan_rows

    good = tmp_path / "a.png"
    Image.fromarray(np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"")
    items = [type("W", (), {"path": p, "name": p.stem, "key": "k" + p.stem})() for p in
             (good, bad, good)]  # fmt: skip
    rows = plan_rows(items, 2)
    assert [r["names"] for r in rows] == [["a", "b"], ["a"]]
    out = decode_batch(rows[0], size=(16, 12), max_pixels=None)
    assert out["rgb"].shape == (2, 16, 12, 3) and out["rgb"].dtype == np.uint8
    np.testing.assert_array_equal(out["rgb"][0], resize_rgb(load_image(good), (16, 12)))
    assert out["errors"][0] == "" and "empty" in out["errors"][1] and not out["rgb"][1].any()
    assert out["keys"] == ["ka", "kb"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2"], "--workers needs --ray"),
        (["--ray", "--workers", "0"], "--workers must be >= 1"),
        (["--ray", "in/"], "not a Ray address"),
    ],
)
def test_cli_refuses_misused_ray_options(tmp_path: Path, args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from camscope.cli import main

    result = CliRunner().invoke(main, ["run", *args, str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# A real local cluster
# ---------------------------------------------------------------------------------------------


def _need_ray() -> None:
    """Skip without the extra, except where CI asks for it (CAMSCOPE_REQUIRE_RAY=1: fail)."""
    if os.environ.get("CAMSCOPE_REQUIRE_RAY") == "1":
        import ray.data  # noqa: F401
    else:
        pytest.importorskip("ray.data")


def _listening_sockets(pids: set[int]) -> set[tuple[int, str]]:
    """(pid, address) of every TCP socket in LISTEN state owned by ``pids`` (Linux /proc)."""
    inodes: dict[str, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes[fields[9]] = _address(fields[1].split(":")[0], width)
    found = set()
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.add((pid, inodes[link[8:-1]]))
    return found


def _address(hexaddr: str, width: int) -> str:
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
    return str(ipaddress.ip_address(words))


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        seen.add(pid)
        todo.extend(c for c in children.get(pid, []) if c not in seen)
    return seen


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


BASE = dict(model="test_resnet", random_weights=True, methods=("gradcam", "ablationcam"),
            batch_size=2, sanity_images=0, metrics=True, steps=4)  # fmt: skip


def _config(inputs: Path, out: Path, **kw) -> Any:
    from camscope.run import RunConfig

    return RunConfig(inputs=(str(inputs),), out_dir=str(out), **{**BASE, **kw})


def _table(out: Path) -> dict[tuple[str, str | None], dict]:
    from camscope.run import results

    rows = results.read_table([out]).drop_columns(["run_dir"]).to_pylist()
    return {(r["name"], r["method"]): r for r in rows}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """One local 2-CPU cluster for the module, its listening sockets watched all along."""
    _need_ray()
    from run_helpers import make_images

    from camscope.run import run_local
    from camscope.run.ray_runner import ray_cluster

    root = tmp_path_factory.mktemp("ray")
    make_images(root / "in", 5)
    (root / "in" / "broken.jpg").write_bytes(b"this is not a jpeg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the actors' thread count: the same float32 sums
    try:
        run_local(_config(root / "in", root / "local"))  # the reference: the in-process run
    finally:
        torch.set_num_threads(threads)
    seen: set[tuple[int, str]] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.3):
            seen.update(_listening_sockets(_descendants(os.getpid())))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ray_cluster(RayOptions(cpus=2)) as info:
            yield root, info, seen
    finally:
        done.set()
        watcher.join()


@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.usefixtures("single_thread")
def test_two_actors_give_the_in_process_run_on_loopback_only(cluster) -> None:
    """2 actors on 5 images (+1 broken): the local run's rows, metrics and maps, and no Ray
    process listens beyond loopback."""
    from camscope.run import results
    from camscope.run.ray_runner import run_ray

    root, info, seen = cluster
    assert (info.node_ip, info.cpus, info.nodes) == ("127.0.0.1", 2.0, 1)
    got = run_ray(_config(root / "in", root / "ray"), RayOptions(workers=2, threads=1))
    assert (got.state, got.n_explained, got.n_failed) == ("complete", 5, 1)

    want, have = _table(root / "local"), _table(root / "ray")
    assert set(have) == set(want) and len(want) == 11  # 5 images x 2 methods + the broken file
    assert have["broken", None]["status"] == "failed"
    assert have["broken", None]["error"] == want["broken", None]["error"]
    for ident, row in want.items():
        if row["status"] != "ok":
            continue
        for key in ("key", "top1_index", "target_index", "top5_index", "empty", "raw_h"):
            assert have[ident][key] == row[key], (ident, key)
        np.testing.assert_allclose(have[ident]["raw"], row["raw"], rtol=0, atol=1e-6)
        for key in (
            "deletion_auc",
            "insertion_auc",
            "average_drop",
            "base_prob",
            "pearson__ablationcam" if ident[1] == "gradcam" else "pearson__gradcam",
        ):
            assert have[ident][key] == pytest.approx(row[key], abs=1e-6), (ident, key)
        m_want = np.load(results.map_path(root / "local", ident[1], ident[0]))
        m_have = np.load(results.map_path(root / "ray", ident[1], ident[0]))
        np.testing.assert_allclose(m_have, m_want, rtol=0, atol=1e-6)
    for name in ("predictions.csv", "metrics.csv", "report.html"):
        assert (root / "ray" / name).read_bytes() == (root / "local" / name).read_bytes() or \
            name == "report.html", name  # fmt: skip
    from PIL import Image

    grids = [np.asarray(Image.open(root / d / "grid.png"), np.int16) for d in ("local", "ray")]
    assert grids[0].shape == grids[1].shape and np.abs(grids[0] - grids[1]).max() <= 1
    run = json.loads((root / "ray" / "run.json").read_text())
    assert run["state"] == "complete" and run["engine"] == "ray"
    assert run["ray"]["workers"] == 2 and run["counts"]["failed"] == 1
    parts = {p.name.split("-ray-")[1].rsplit("-", 1)[0] for p in results.part_files(root / "ray")
             if "-ray-" in p.name}  # fmt: skip
    assert parts, "no actor wrote a part file"  # each actor its own (who gets work is Ray's)

    assert seen, "no listening socket of the Ray processes was seen"
    assert all(_is_loopback(addr) for _, addr in seen), sorted(seen)


@pytest.mark.ray
@pytest.mark.usefixtures("single_thread")
def test_stop_keeps_finished_parts_and_the_run_resumes(cluster) -> None:
    """Ctrl-C (``stop``) mid-run: interrupted, finished parts kept; resuming completes it with
    the uninterrupted run's rows."""
    from camscope.run import results, run_local
    from camscope.run.ray_runner import run_ray

    root = cluster[0]
    out = root / "stopped"
    stop = threading.Event()

    def stop_after_first_part() -> None:
        while not stop.is_set():
            if any("-ray-" in p.name for p in (out / "results").glob("part-*")):
                stop.set()
            time.sleep(0.05)

    threading.Thread(target=stop_after_first_part, daemon=True).start()
    first = run_ray(_config(root / "in", out, batch_size=1), RayOptions(workers=1, threads=1),
                    stop=stop)  # fmt: skip
    assert first.state == "interrupted" and first.n_explained < 5
    assert json.loads((out / "run.json").read_text())["state"] == "interrupted"
    assert not list(out.rglob("*.tmp"))
    kept = _table(out)
    assert kept, "the finished part files were not kept"
    finished = {n for n in {k[0] for k in kept} if all(
        kept.get((n, m), {}).get("status") == "ok" for m in BASE["methods"])}  # fmt: skip
    again = run_local(_config(root / "in", out, batch_size=1))
    assert again.state == "complete" and again.n_done_before == len(finished)
    assert again.n_done_before + again.n_explained == 5
    want, have = _table(root / "local"), _table(out)
    assert {k for k, r in have.items() if r["status"] == "ok"} == {
        k for k, r in want.items() if r["status"] == "ok"}  # fmt: skip
    for ident, row in want.items():
        if row["status"] == "ok":
            np.testing.assert_allclose(have[ident]["raw"], row["raw"], rtol=0, atol=1e-6)
    assert results.validate(out) == []
