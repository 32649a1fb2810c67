"""`camscope run --ray`: a local Ray cluster gives the in-process run's results, on loopback only.

The cluster tests are marked ``ray`` (``pytest -m ray`` selects them, ``-m "not ray"`` skips
them) and skip when the optional extra is not installed, unless ``CAMSCOPE_REQUIRE_RAY=1`` (as
in ``.ci/run``) makes that a failure. The checks that the plain install never
imports Ray run everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

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
          "--model", "efficientnet_lite0", "--methods", "gradcam", "--quiet"],
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
    with pytest.raises(ValueError, match="GPU"):
        actor_resources(_info(16, gpus=2), 3)
    with pytest.raises(ValueError, match="workers"):
        actor_resources(_info(2), 0)


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


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("ray-inputs")
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    return folder


@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_cluster_decodes_like_io_and_listens_on_loopback_only(images: Path) -> None:
    """The decode task stage on a 2-CPU local cluster gives `camscope.io`'s pixels and one-line
    errors, and no Ray process listens beyond loopback meanwhile."""
    _need_ray()
    import ray

    from camscope.io import load_image, resize_rgb
    from camscope.run.ray_runner import decode_row, ray_cluster

    paths = sorted(images.iterdir())
    rows = [{"path": os.fsencode(p), "name": p.stem} for p in paths]
    seen: set[tuple[int, str]] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.3):
            seen.update(_listening_sockets(_descendants(os.getpid())))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ray_cluster(RayOptions(workers=2, cpus=2)) as info:
            assert (info.node_ip, info.cpus, info.nodes) == ("127.0.0.1", 2.0, 1)
            ds = ray.data.from_items(rows, override_num_blocks=2).map(
                decode_row, fn_kwargs={"size": (64, 48), "max_pixels": None}, num_cpus=0.5
            )
            got = {os.fsdecode(r["path"]): r for r in ds.take_all()}
            seen.update(_listening_sockets(_descendants(os.getpid())))
        assert not ray.is_initialized()
    finally:
        done.set()
        watcher.join()

    assert seen, "no listening socket of the Ray processes was seen"
    assert all(_is_loopback(addr) for _, addr in seen), sorted(seen)
    assert sorted(got) == [str(p) for p in paths]
    for path in paths:
        row = got[str(path)]
        if path.name == "broken.jpg":
            assert row["error"] == "not a recognised image format"
            assert not row["rgb"].any()
        else:
            assert row["error"] == ""
            np.testing.assert_array_equal(row["rgb"], resize_rgb(load_image(path), (64, 48)))
