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
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from camscope.io import LoadedImage, to_tensor
from camscope.run import RunWriter, WorkItem, prepare
from camscope.run.explainer import make_explainer

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
        """True when Ray runs in this process's own local cluster (no address to connect to)."""
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
    accelerators: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActorResources:
    """Per-actor Ray resources and the torch thread count that goes with them."""

    num_cpus: float
    num_gpus: float
    threads: int
    device: str


def actor_resources(
    info: ClusterInfo, workers: int, threads: int | None = None, device: str = "auto"
) -> ActorResources:
    """Share the cluster between ``workers`` explain actors.

    GPU clusters get one GPU per actor (and one CPU) unless ``device`` is ``cpu``; ``cuda``
    on a cluster without GPUs is a ValueError. CPU clusters split their logical CPUs
    equally after :data:`DECODE_CPUS` for the decode stage; no actor asks for more than the
    largest node has (it could never be placed). Torch threads are the whole CPUs of that
    share (at least 1).
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if device.startswith("cuda") and info.gpus < 1:
        raise ValueError(f"--device {device}: the Ray cluster has no GPU")
    if info.gpus >= 1 and device != "cpu":
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
        accelerators=tuple(
            sorted(k.split(":", 1)[1] for k in total if k.startswith("accelerator_type:"))
        ),  # fmt: skip
    )


@contextlib.contextmanager
def ray_cluster(options: RayOptions) -> Iterator[ClusterInfo]:
    """Connect to (or start) the cluster for one run; disconnect (or stop it) afterwards.

    A local cluster listens on 127.0.0.1 only (checked: the run stops if Ray chose another
    node address) and has no dashboard. Its workers import camscope from the same place as the
    driver.

    When this process is already connected to Ray (``ray.init`` called by a library user),
    that connection is used and left open.

    Raises:
        RayUnavailableError: ray missing, too old for a loopback-only local cluster, or
            unreachable.
    """
    ray = _import_ray()
    if options.local and _version(ray.__version__) < MIN_LOCAL_RAY:
        raise RayUnavailableError(
            f"ray {ray.__version__} may listen beyond loopback; a local cluster needs ray >= "
            f'{".".join(map(str, MIN_LOCAL_RAY))} (pip install "camscope[ray]")'
        )
    if ray.is_initialized():  # a library caller connected already: use it, leave it open
        info = _cluster_info(ray, local=False)
        log.info("ray: using this process's Ray connection (node %s)", info.node_ip)
        _quiet_ray_data()
        yield info
        return
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


def decode_batch(row: dict[str, Any], *, size: tuple[int, int], max_pixels: int | None) -> dict:
    """Decode one planned batch (a dataset row holds ``paths``, ``names``, ``keys``).

    Adds ``rgb`` (n, H, W, 3) uint8 and ``errors`` (one-line cause or ``""`` per image).
    A batch, not an image, is the unit so that the actors explain exactly the batches the
    local run would: per-image results then match it bit for bit where no input failed.
    """
    decoded = [decode_row({"path": p}, size=size, max_pixels=max_pixels) for p in row["paths"]]
    return {
        **row,
        "rgb": np.stack([d["rgb"] for d in decoded]),
        "errors": [d["error"] for d in decoded],
    }


def plan_rows(items: Sequence[Any], batch_size: int) -> list[dict[str, Any]]:
    """The dataset rows of a plan: consecutive chunks of ``batch_size`` work items."""
    return [
        {
            "paths": [os.fsencode(it.path) for it in chunk],
            "names": [it.name for it in chunk],
            "keys": [it.key for it in chunk],
        }
        for chunk in (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    ]


class _Collect(logging.Handler):
    """Keeps an actor's camscope log lines so that the driver says them (once), not Ray."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:  # errors come back as per-input status rows
            self.lines.append(" ".join(record.getMessage().split()))


class ExplainActor:
    """One explain worker: prepares the run once, then explains planned batches.

    The model is loaded once; per planned batch the actor explains the decoded images and
    writes their files and one results part file.

    Returns one status row per input (``status``, ``error``) plus the warnings it logged, so
    the driver reports every failure as one line and every substitution once.
    """

    def __init__(self, config: Any, settings_hash: str, threads: int, prefix: str) -> None:
        import torch

        torch.set_num_threads(threads)
        self.log = _Collect()
        logger = logging.getLogger("camscope")
        logger.addHandler(self.log)
        logger.propagate = False
        self.ctx = prepare(config, check_folder=False)
        if self.ctx.settings_hash != settings_hash:
            raise RuntimeError(
                f"{_safe_host()}: settings differ from the driver's ({self.ctx.settings_hash} != "
                f"{settings_hash}): install the same camscope, torch, timm and weights everywhere"
            )
        self.explainer = make_explainer(self.ctx)
        part = f"{prefix}-{_safe_host()}-{os.getpid():x}"
        self.writer = _Writer(self.ctx, part_prefix=part, grid=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {"path": [], "status": [], "error": [], "notes": []}
        for paths, names, keys, rgbs, errors in zip(*_columns(batch), strict=True):
            items = [
                WorkItem(Path(os.fsdecode(bytes(p))), str(n), str(k))
                for p, n, k in zip(paths, names, keys, strict=True)
            ]
            failed: dict[str, str] = {}
            good, decoded = [], []
            mean, std = self.ctx.loaded.mean, self.ctx.loaded.std
            for item, rgb, error in zip(items, rgbs, errors, strict=True):
                if error:
                    self.writer.fail(item, str(error))
                else:
                    good.append(item)
                    decoded.append(LoadedImage(item.path, rgb, to_tensor(rgb, mean, std), None))
            if good:
                result = self.explainer(good, decoded)
                failed |= {r["name"]: _cause(r) for r in result.rows if r["status"] != "ok"}
                self.writer.write(result)
            self.writer.close()  # flush this batch's part file now
            failed |= self.writer.failed
            self.writer.failed = {}
            for item in items:
                out["path"].append(os.fsencode(item.path))
                out["status"].append("failed" if item.name in failed else "ok")
                out["error"].append(failed.get(item.name, ""))
                out["notes"].append("\n".join(self.log.lines))
                self.log.lines.clear()
        return {k: np.array(v, dtype=object) for k, v in out.items()}


def _columns(batch: dict[str, np.ndarray]) -> tuple[Any, ...]:
    return tuple(batch[c] for c in ("paths", "names", "keys", "rgb", "errors"))


def _cause(row: dict[str, Any]) -> str:
    method = row.get("method")
    return f"[{method}] {row['error']}" if method else str(row["error"])


class _Writer(RunWriter):
    """`RunWriter` that also remembers which inputs it recorded as failed (name -> cause)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed: dict[str, str] = {}

    def fail(self, item: WorkItem, cause: str, method: str | None = None) -> None:
        self.failed[item.name] = f"[{method}] {cause}" if method else cause
        super().fail(item, cause, method)


def _safe_host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40] or "host"


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _dataset(ray: Any, rows: list[dict], ctx: Any, res: ActorResources, workers: int) -> Any:
    """Build the dataset: planned batches -> decode tasks -> explain actors.

    Lazy until the driver iterates.
    """
    data = ray.data.DataContext.get_current()
    data.enable_progress_bars = False
    data.execution_options.preserve_order = False
    # Ray gives each GPU actor its own GPU as its only visible one: "cuda", never "cuda:N".
    config = replace(ctx.config, device=res.device)
    prefix = f"{time.strftime('%Y%m%dT%H%M%S')}-ray"
    actor = _bound_actor(config, ctx.settings_hash, res.threads, prefix)
    size = tuple(int(v) for v in ctx.loaded.input_size)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    ds = ds.map(
        decode_batch,
        fn_kwargs={"size": size, "max_pixels": ctx.config.max_pixels},
        num_cpus=DECODE_CPUS,
    )
    return ds.map_batches(
        actor,
        batch_size=1,
        batch_format="numpy",
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
        compute=ray.data.ActorPoolStrategy(size=workers),
    )


def _bound_actor(config: Any, settings_hash: str, threads: int, prefix: str) -> type:
    """`ExplainActor` with its arguments bound into a class that Ray ships by value."""

    class BoundExplainActor(ExplainActor):
        def __init__(self) -> None:
            super().__init__(config, settings_hash, threads, prefix)

    return BoundExplainActor


@dataclass
class _Tally:
    total: int
    ok: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


def _drive(
    ds: Any,
    tally: _Tally,
    stop: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> str:
    """Stream the status rows back: one log line per failed input, each warning once."""
    start = last = time.perf_counter()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for path, status, error, notes in zip(
            *(batch[c] for c in ("path", "status", "error", "notes")), strict=True
        ):
            if status == "ok":
                tally.ok += 1
            else:
                tally.failed += 1
                log.error("%s", f"{_escaped(path)}: {error}")
            for line in filter(None, str(notes).split("\n")):
                if line not in tally.notes:
                    tally.notes.append(line)
                    log.warning("%s", line)
        done = tally.ok + tally.failed
        if progress is not None:
            progress(done, tally.total)
        elif time.perf_counter() - last > 60:
            last = time.perf_counter()
            log.info("explain: %d of %d image(s) (%.0f s)", done, tally.total, last - start)
        if stop is not None and stop.is_set():
            return "interrupted"
    return "complete"


def _escaped(path: Any) -> str:
    from camscope.io.runfolder import escape_path

    return escape_path(os.fsdecode(bytes(path)))


def run_ray(
    config: Any,
    options: RayOptions,
    *,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Run ``config`` (a `camscope.run.RunConfig`) on Ray: same folder and rows as `run_local`.

    The driver checks the settings (the model is loaded once on its CPU), connects to the
    cluster and sizes the actors, then opens and plans the run (collect, shard, resume),
    streams the planned batches through the decode tasks and the explain actors, and
    finalizes the folder. ``stop`` set (first Ctrl-C): the batches in flight are dropped,
    finished part files stay, run.json says interrupted.

    Raises:
        camscope.run.UsageError: bad options, Ray missing or unreachable, actors that do not
            fit the cluster; nothing has been written then.
    """
    from camscope.run import UsageError

    ctx = prepare(replace(config, device="cpu"))
    ctx.config = config
    try:
        with ray_cluster(options) as info:
            res = actor_resources(info, options.workers, options.threads, config.device)
            return _run(ctx, options, info, res, stop, progress)
    except (RayUnavailableError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(str(exc)) from exc


def _run(
    ctx: Any,
    options: RayOptions,
    info: ClusterInfo,
    res: ActorResources,
    stop: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> Any:
    """Run on Ray: `drive` (open -> plan -> finalize) around the Ray execution step."""
    from camscope.run.driver import drive

    def execute(ctx: Any, todo: Any, record: dict, tally: Any) -> str:
        _record_cluster(record, options, info, res)
        return _execute(ctx, todo, tally, options, res, stop, progress)

    return drive(ctx, execute, stop=stop)


def _execute(
    ctx: Any,
    todo: Any,
    tally: Any,
    options: RayOptions,
    res: ActorResources,
    stop: threading.Event | None,
    progress: Callable[[int, int], None] | None,
) -> str:
    """The Ray execution step: planned batches -> decode tasks -> explain actors; the grid."""
    import ray

    writer = RunWriter(ctx, grid=False)
    for item in todo.failures:
        writer.fail(item, item.error or "failed")
    writer.close()
    status, state = _Tally(len(todo.items)), "failed"
    try:
        rows = plan_rows(todo.items, ctx.config.batch_size)
        ds = _dataset(ray, rows, ctx, res, options.workers) if rows else None
        state = _drive(ds, status, stop, progress) if ds is not None else "complete"
    except ray.exceptions.RayError as exc:
        if stop is not None and stop.is_set():  # Ctrl-C in a terminal reaches Ray's workers too
            state = "interrupted"
        else:
            tally.problems.append(f"ray: {_first_line(exc)}")
            log.error("%s", tally.problems[-1])
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        tally.n_ok, tally.n_failed = status.ok, status.failed + len(todo.failures)
        tally.notes = list(status.notes)
        if state != "failed":
            tally.problems += write_grid(ctx, todo.items)
    return state


_GRID_COLUMNS = ("top1_name", "top1_prob", "target_index", "target_name", "top1_index", "empty",
                 "raw", "raw_h", "raw_w", "object_index", "object_score", "box")  # fmt: skip


def write_grid(ctx: Any, items: Sequence[WorkItem]) -> list[str]:
    """The comparison grid of the first explained ``items``, as the local run draws it.

    The actors do not draw it (it spans their batches); the driver rebuilds each map from the
    results table's feature-resolution map (`normalise_maps`, as the explainer made it; a
    per-object task's saved .npy map when there is one: a detector's map is cut to the image)
    and decodes the images again. Returns the problems (one line each).
    """
    from camscope.io import InputError, load_image, resize_rgb, runfolder
    from camscope.run.writer import GRID_IMAGES

    table = runfolder.read_table([ctx.out_dir], columns=_GRID_COLUMNS).to_pylist()
    rows: dict[tuple, list[dict]] = {}
    for r in table:
        if r["status"] == "ok":
            rows.setdefault((r["key"], r["name"], r["method"]), []).append(r)
    size = tuple(int(v) for v in ctx.loaded.input_size)
    writer = RunWriter(ctx, grid=True)
    for item in items:
        if writer.n_grid >= GRID_IMAGES:
            break
        mine = [sorted(rows.get((item.key, item.name, m), []), key=_object) for m in ctx.methods]
        if not all(mine):
            continue
        try:
            image = load_image(item.path, max_pixels=ctx.config.max_pixels)
        except InputError:
            continue
        out = _grid_output(ctx, item, mine, resize_rgb(image, size), image.size)
        writer._grid(out, 0)
    writer.close()
    return writer.problems


def _object(row: dict) -> int:
    return -1 if row.get("object_index") is None else int(row["object_index"])


def _grid_output(ctx: Any, item: WorkItem, mine: list[list[dict]], rgb: Any, original: Any):
    """One image's `BatchOutput` for the grid from its table rows (per method, per object)."""
    import torch

    from camscope.io import runfolder
    from camscope.methods import normalise_maps
    from camscope.run import BatchOutput
    from camscope.run.explainer import MapRow
    from camscope.run.objects import caption

    size = rgb.shape[:2]
    maps, objects = {}, None
    for method, rows in zip(ctx.methods, mine, strict=True):
        stack = []
        for row in rows:
            npy = runfolder.map_path(ctx.out_dir, method, item.name, "npy", row["object_index"])
            if row["object_index"] is not None and npy.is_file():
                stack.append(np.load(npy))
                continue
            raw = torch.tensor(row["raw"]).view(1, row["raw_h"], row["raw_w"])
            stack.append(normalise_maps(raw, size)[0][0].numpy())  # (maps, empty)[0][0]
        maps[method] = np.stack(stack)
    if mine[0][0].get("object_index") is not None:
        sx, sy = size[1] / original[0], size[0] / original[1]
        objects = [
            MapRow(0, r["object_index"], _unscaled(r["box"], sx, sy),
                   caption(r["target_name"], r["object_score"], r["box"]))
            for r in mine[0]
        ]  # fmt: skip
    rows = [r for method_rows in mine for r in method_rows]
    return BatchOutput([item], rows, maps, [rgb], objects)


def _unscaled(box: Any, sx: float, sy: float) -> Any:
    if box is None:
        return None
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _first_line(exc: BaseException) -> str:
    """The cause of a Ray error in one line (Ray wraps the remote traceback around it)."""
    from camscope.errors import one_line

    cause = getattr(exc, "cause", None) or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return one_line(f"{type(cause).__name__}: {lines[-1] if lines else ''}", 500)


def _record_cluster(record: dict, options: RayOptions, info: ClusterInfo,
                    res: ActorResources) -> None:  # fmt: skip
    log.info("ray: %d node(s), %g CPU, %g GPU; %d worker(s) of %g CPU, %g GPU, %d thread(s)",
             info.nodes, info.cpus, info.gpus, options.workers, res.num_cpus, res.num_gpus,
             res.threads)  # fmt: skip
    record.update(device=res.device, threads=res.threads, engine="ray")
    if res.device == "cuda":  # the driver's own device name says nothing about the actors'
        record["device_name"] = ", ".join(info.accelerators) or "GPU (type not reported by Ray)"
    record["ray"] = {"address": options.address or "local", "nodes": info.nodes,
                     "cpus": info.cpus, "gpus": info.gpus, "accelerators": list(info.accelerators),
                     "workers": options.workers, "actor": vars(res)}  # fmt: skip
