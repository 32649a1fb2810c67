"""Stage 4, write (I/O only): per-image files, results part files and the bounded grid.

For every batch `RunWriter.write` saves ``<method>/<name>.npy`` (the 224x224 float32 map) and
``.png`` (jet overlay) as ``--save-maps`` asks, then the batch's rows as one part file
``results/part-<prefix>-<seq>.parquet``. Every file appears atomically (temporary name +
``os.replace``), and a row is only written after its image's files, so a run killed at any
moment loses at most the batch in flight and the table never points at a missing file.
The comparison grid shows the first `GRID_IMAGES` images of the session (pages of
`GRID_ROWS_PER_PAGE` written as they fill): memory does not grow with the run.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from camscope.io import runfolder, save_npy, save_png
from camscope.run.collect import WorkItem
from camscope.run.config import RunContext
from camscope.run.explainer import BatchOutput, MapRow, failed_row
from camscope.visualize import GridRow, draw_box, overlay, save_grid

__all__ = ["GRID_IMAGES", "GRID_ROWS_PER_PAGE", "RunWriter", "session_prefix"]

log = logging.getLogger("camscope")

GRID_ROWS_PER_PAGE = 8
GRID_IMAGES = 64


def session_prefix() -> str:
    """A part-file prefix unique to this session (``20261127T130102-4f2a-9c1e``).

    The moment, the process id and a random part: two sessions of one process in the same
    second (two `camscope.explain` calls into one folder) never write the same part file.
    """
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid():x}-{secrets.token_hex(2)}"


class RunWriter:
    """Writes one session's (or one Ray actor's) outputs into the run folder.

    Args:
        ctx: the prepared run (folder, methods, --save-maps, settings hash).
        part_prefix: distinguishes this writer's part files from other writers'.
        grid: write the comparison grid pages (the local driver does; Ray actors do not).
    """

    def __init__(self, ctx: RunContext, part_prefix: str | None = None, *, grid: bool = True):
        self.ctx = ctx
        self.out = ctx.out_dir
        self.prefix = part_prefix or session_prefix()
        self.seq = 0
        self.pending: list[dict[str, Any]] = []
        self.grid_rows: list[GridRow] = [] if grid else None  # type: ignore[assignment]
        self.grid_pages: list[Path] = []
        self.n_grid = 0
        self.n_ok = 0
        self.n_failed = 0
        self.problems: list[str] = []

    def fail(self, item: WorkItem, cause: str, method: str | None = None) -> None:
        """Record a failed input (written with the next part); logs its one line."""
        log.error("%s", f"{item.file}{f' [{method}]' if method else ''}: {cause}")
        self.pending.append(failed_row(item, cause, self.ctx.settings_hash, method))
        self.n_failed += 1

    def _save_files(self, out: BatchOutput, j: int) -> None:
        """Image ``j``'s maps (one per object of it for per-object tasks) and overlays."""
        name = out.items[j].name
        for r, row in enumerate(out.map_rows()):
            if row.item != j:
                continue
            for method, maps in out.maps.items():
                if "npy" in self.ctx.save_maps:
                    save_npy(runfolder.map_path(self.out, method, name, "npy", row.index), maps[r])
                if "png" in self.ctx.save_maps:
                    path = runfolder.map_path(self.out, method, name, "png", row.index)
                    save_png(path, _overlay(out.rgbs[j], maps[r], row))

    def write(self, out: BatchOutput) -> None:
        """Save a batch's per-image files, then its rows (and pending failures) as a part."""
        rows: list[dict[str, Any]] = [r for r in out.rows if r["status"] != "ok"]
        self.n_failed += len({r["name"] for r in rows})  # an input, or a method on it, failed
        ok_rows: dict[str, list[dict[str, Any]]] = {}
        for r in out.rows:
            if r["status"] == "ok":
                ok_rows.setdefault(r["name"], []).append(r)
        for j, item in enumerate(out.items):
            try:
                self._save_files(out, j)
            except OSError as exc:
                self.fail(
                    item,
                    f"cannot write outputs ({exc.strerror or exc}: "
                    f"{runfolder.escape_path(exc.filename or self.out)})",
                )
                continue
            rows += ok_rows.get(item.name, [])
            if {r["method"] for r in ok_rows.get(item.name, [])} == set(self.ctx.methods):
                self.n_ok += 1
            self._grid(out, j)
        self._flush(rows)

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        rows = self.pending + rows
        self.pending = []
        if not rows:
            return
        try:
            runfolder.write_part(self.out, self.prefix, self.seq, rows, self.ctx.methods)
        except OSError as exc:
            path = self.out / runfolder.RESULTS / runfolder.part_name(self.prefix, self.seq)
            line = f"{path}: cannot write results ({exc.strerror or exc}); {len(rows)} row(s) lost"
            log.error("%s", line)
            self.problems.append(line)
        self.seq += 1

    def _grid(self, out: BatchOutput, j: int) -> None:
        for r, row in enumerate(out.map_rows()):
            if row.item == j:
                self._grid_row(out, r, row)

    def _grid_row(self, out: BatchOutput, r: int, row: MapRow) -> None:
        """One grid row: map row ``r`` (an image, or one object of it) of every method."""
        if self.grid_rows is None or self.n_grid >= GRID_IMAGES:
            return
        self.n_grid += 1
        j = row.item
        item = out.items[j]
        first = next((r for r in out.rows if r["name"] == item.name and r["status"] == "ok"), None)
        title = item.name
        if row.index is not None:
            title += f" #{row.index}: {row.caption}"
        elif first is not None:
            title += f": {first['top1_name']} (p={first['top1_prob']:.2f})"
            if first["target_index"] != first["top1_index"]:
                title += f", target {first['target_name']}"
        overlays = {m: _overlay(out.rgbs[j], maps[r], row) for m, maps in out.maps.items()}
        notes = {
            x["method"]: "empty map"
            for x in out.rows
            if x["name"] == item.name and x.get("object_index") == row.index and x.get("empty")
        }
        self.grid_rows.append(
            GridRow(title=title, image=out.rgbs[j], overlays=overlays, notes=notes)
        )
        if len(self.grid_rows) >= GRID_ROWS_PER_PAGE:
            self._grid_page()

    def _grid_page(self) -> None:
        if not self.grid_rows:
            return
        page = len(self.grid_pages) + 1
        stem = runfolder.grid_page_stem(page)
        try:
            self.grid_pages += save_grid(
                self.out,
                self.grid_rows,
                self.ctx.methods,
                rows_per_file=len(self.grid_rows),
                stem=stem,
            )
        except OSError as exc:
            line = f"{self.out / (stem + '.png')}: cannot write grid ({exc.strerror or exc})"
            log.error("%s", line)
            self.problems.append(line)
        self.grid_rows = []

    def close(self) -> None:
        """Write pending failures and the last grid page."""
        self._flush([])
        if self.grid_rows is not None:
            self._grid_page()


def _overlay(rgb: Any, cam: Any, row: MapRow) -> Any:
    """The map's overlay, with the object's box and caption drawn when it has one."""
    image = overlay(rgb, cam)
    return image if row.box is None else draw_box(image, row.box, row.caption)
