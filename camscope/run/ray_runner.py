"""Drive a camscope run with Ray Data: the same stages, spread over a cluster's actors.

The local run and this one share their stages; Ray only drives them differently:

* the list of inputs becomes a Ray dataset (one row per file, the path as bytes so that any
  file name survives);
* decoding and resizing is a task stage (``Dataset.map``);
* the CAMs run in an actor pool (``Dataset.map_batches`` with a callable class): each actor
  loads the model once, explains its batches and writes that batch's per-image files and a
  results part file into the run folder itself, which must be a path every node can see;
* the driver only streams back one small row per input (name, status, error), reports each
  failure as one line, and finishes the run folder.

A local cluster (no address) is started by camscope on 127.0.0.1 only, with the dashboard off:
every Ray process (GCS, raylet, workers, agents) listens on loopback, never on the network,
because a Ray head reachable from the network runs anyone's code. ``auto`` or ``HOST:PORT``
joins a cluster that somebody started (its security is theirs: see the README, "--ray").

(This module holds the cluster, resources and decode stage; the explain actors and the driver
come with `camscope.run`'s stages.)

Example::

    >>> from camscope.run.ray_runner import RayOptions, ray_cluster
    >>> with ray_cluster(RayOptions(workers=2)) as info:      # doctest: +SKIP
    ...     print(info.node_ip, info.cpus)
    127.0.0.1 2.0
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("camscope")

__all__ = [
    "LOOPBACK",
    "ActorResources",
    "ClusterInfo",
    "RayOptions",
    "RayUnavailableError",
    "actor_resources",
    "decode_row",
    "parse_address",
    "ray_cluster",
]

#: The only address a cluster that camscope starts listens on.
LOOPBACK = "127.0.0.1"
#: Oldest Ray whose local cluster is known to listen on loopback only (every gRPC server binds
#: to the node IP since 2.5x; 2.60 is the version tests/test_ray.py checks socket by socket).
MIN_LOCAL_RAY = (2, 60)
#: CPUs the decode stage reserves (fractional: decoding mostly waits on Pillow's C code).
DECODE_CPUS = 0.5
_ADDRESS_RE = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$")


class RayUnavailableError(RuntimeError):
    """Ray is not installed (``pip install "camscope[ray]"``) or the cluster cannot be used."""


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and how many actors to run.

    Attributes:
        address: None or ``"local"`` starts a private cluster on 127.0.0.1; ``"auto"`` joins
            the cluster running on this machine (``ray start``) or named by ``RAY_ADDRESS``;
            ``HOST:PORT`` or ``ray://HOST:PORT`` joins that cluster.
        workers: number of explain actors (each loads the model once).
        cpus: logical CPUs of a local cluster (default: this machine's CPU count).
        threads: torch threads per CPU actor (default: the actor's share of the CPUs).
    """

    address: str | None = None
    workers: int = 1
    cpus: int | None = None
    threads: int | None = None

    @property
    def local(self) -> bool:
        return self.address in (None, "local")


def parse_address(text: str | None) -> str | None:
    """Validate a ``--ray`` value: ``local``/None, ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Raises:
        ValueError: anything else (one line, fit for a usage error), e.g. an input folder that
            the option swallowed.
    """
    if text is None or text in ("local", "auto"):
        return text
    if _ADDRESS_RE.match(text):
        return text
    raise ValueError(
        f"--ray {text!r}: not a Ray address (give local, auto, HOST:PORT or ray://HOST:PORT; "
        "write '--ray local' when inputs follow)"
    )


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver sees of the cluster it is connected to."""

    cpus: float
    gpus: float
    nodes: int
    max_node_cpus: float
    local: bool
    node_ip: str


@dataclass(frozen=True)
class ActorResources:
    """Per-actor Ray resources and the torch thread count that goes with them."""

    num_cpus: float
    num_gpus: float
    threads: int
    device: str


def actor_resources(info: ClusterInfo, workers: int, threads: int | None = None) -> ActorResources:
    """Share the cluster between ``workers`` explain actors.

    GPU clusters get one GPU per actor (and one CPU). CPU clusters split their logical CPUs
    equally after :data:`DECODE_CPUS` for the decode stage; no actor asks for more than the
    largest node has (it could never be placed). Torch threads are the whole CPUs of that
    share (at least 1).
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if info.gpus >= 1:
        if workers > info.gpus:
            raise ValueError(f"--workers {workers}: the cluster has {info.gpus:g} GPU(s)")
        return ActorResources(num_cpus=1.0, num_gpus=1.0, threads=1, device="cuda")
    share = (info.cpus - DECODE_CPUS) / workers
    share = min(share, info.max_node_cpus - DECODE_CPUS)
    if share < 0.25:
        raise ValueError(
            f"--workers {workers}: {info.cpus:g} CPU(s) leave less than 1/4 CPU per worker"
        )
    threads = threads or max(1, math.floor(info.cpus / workers))
    return ActorResources(num_cpus=round(share, 4), num_gpus=0.0, threads=threads, device="cpu")


def _import_ray() -> Any:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(
            f'--ray needs the optional extra: pip install "camscope[ray]" ({exc})'
        ) from exc
    return ray


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``ray.init`` keep 127.0.0.1 as the node IP of the cluster it starts.

    Ray replaces a loopback ``_node_ip_address`` by the machine's network address unless
    clusters are disabled (its Windows/macOS default, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read into ``ray_constants.ENABLE_RAY_CLUSTER`` at import). With the loopback node IP every
    gRPC server and agent binds to 127.0.0.1. The caller checks the node IP afterwards, so a
    Ray version that works otherwise is refused, not trusted.
    """
    from ray._private import ray_constants

    before = getattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _cluster_info(ray: Any, local: bool) -> ClusterInfo:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    node_cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes] or [0.0]
    return ClusterInfo(
        cpus=float(total.get("CPU", 0.0)),
        gpus=float(total.get("GPU", 0.0)),
        nodes=len(nodes),
        max_node_cpus=max(node_cpus),
        local=local,
        node_ip=ray.util.get_node_ip_address(),
    )


@contextlib.contextmanager
def ray_cluster(options: RayOptions) -> Iterator[ClusterInfo]:
    """Connect to (or start) the cluster for one run; disconnect (or stop it) afterwards.

    A local cluster listens on 127.0.0.1 only (checked: the run stops if Ray chose another
    node address) and has no dashboard. Its workers import camscope from the same place as the
    driver.

    Raises:
        RayUnavailableError: ray missing, already initialised in this process, or unreachable.
    """
    ray = _import_ray()
    if options.local and _version(ray.__version__) < MIN_LOCAL_RAY:
        raise RayUnavailableError(
            f"ray {ray.__version__} may listen beyond loopback; a local cluster needs ray >= "
            f'{".".join(map(str, MIN_LOCAL_RAY))} (pip install "camscope[ray]")'
        )
    if ray.is_initialized():
        raise RayUnavailableError("ray is already initialised in this process")
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
    if options.local:
        cpus = options.cpus or os.cpu_count() or 1
        path = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        kwargs |= {
            "address": "local",
            "_node_ip_address": LOOPBACK,
            "num_cpus": cpus,
            "num_gpus": _local_gpus(),
            "runtime_env": {"env_vars": {"PYTHONPATH": path}},
        }
    else:
        kwargs["address"] = options.address
    try:
        with _loopback_node_ip() if options.local else contextlib.nullcontext():
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"cannot reach Ray at {options.address}: {exc}") from exc
    _quiet_ray_data()
    try:
        info = _cluster_info(ray, options.local)
        if options.local and info.node_ip != LOOPBACK:
            raise RayUnavailableError(
                f"the local Ray node took address {info.node_ip}, not {LOOPBACK}; refusing to "
                "run a cluster reachable from the network"
            )
        yield info
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """Ray Data's progress chatter off: its INFO lines, and the note that bars are off."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _local_gpus() -> int:
    """GPUs a local cluster offers: those torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# --------------------------------------------------------------------------------------------
# Stages (run inside Ray workers; plain functions, testable without Ray)
# --------------------------------------------------------------------------------------------


def decode_row(row: dict[str, Any], *, size: tuple[int, int], max_pixels: int | None) -> dict:
    """Decode and resize one input (the task stage): adds ``rgb`` (uint8 H x W x 3), ``error``.

    A file that cannot be used gets an all-zero ``rgb`` and its one-line cause in ``error``,
    so a bad input never stops the stage.
    """
    from camscope.io import InputError, load_image, resize_rgb

    path = os.fsdecode(row["path"])
    try:
        rgb, error = resize_rgb(load_image(path, max_pixels=max_pixels), size), ""
    except InputError as exc:
        rgb, error = np.zeros((*size, 3), np.uint8), exc.cause
    except MemoryError:
        rgb, error = np.zeros((*size, 3), np.uint8), "not enough memory to decode"
    return {**row, "rgb": rgb, "error": error}
