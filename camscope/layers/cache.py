"""What depends only on a model and a layer, built once: the fx split and the layer's layout.

pytorch-grad-cam's README builds a CAM object per image (``with GradCAM(...) as cam:``). The
split (a torch.fx trace) and the layout probe (a dry forward pass) depend on the model's
structure and the layer, not on the object, so every `BaseCAM` for a model and layer already
seen reuses them.

Safety: entries are kept per model object in a `weakref.WeakKeyDictionary` (a model that is
deleted takes its entry with it) under a structural fingerprint: every submodule's name, id,
type and training flag, and the ids of every parameter and buffer. A model whose structure
changed (a submodule swapped, a parameter object replaced, train/eval switched: torch.fx
bakes Python-level branches of the forward into the graph) gets a fresh split; weights changed
in place (``load_state_dict``, optimiser steps, ``.data``) keep the entry, since the split
graphs call the model's own modules and read its parameters live. Python attributes other
than these that a forward reads (``self.some_flag``) are baked in by torch.fx as when the
split was built; `clear_cache` forgets a model (or all).

Layouts are kept under the model a transparent wrapper shares its submodules with (camscope's
task wrappers: ``LogitsModel``, the detection box scores, the per-pixel segmenter, keep the
wrapped model in ``inner`` or ``wrapped`` and share its ``_modules``), keyed by the wrappers'
types: a new wrapper per image (the detection task builds one per image's boxes) does not probe
the layer again. Splits stay per model object (a wrapper's forward is its own graph).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from camscope.layers import split as _split
from camscope.layers.layout import MapLayout
from camscope.layers.probe import check_layer

__all__ = ["cached_layout", "cached_split", "clear_cache", "fingerprint"]

log = logging.getLogger("camscope")

Fingerprint = tuple[tuple, tuple[int, ...]]


@dataclass
class _Entry:
    fingerprint: Fingerprint
    splits: dict[str, _split.FxSplit | str] = field(default_factory=dict)  # or why not
    layouts: dict[tuple, MapLayout] = field(default_factory=dict)


_ENTRIES: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()
_LOCK = threading.RLock()


def fingerprint(model: nn.Module) -> Fingerprint:
    """The model's structure: (name, id, type, training) per submodule; parameter/buffer ids."""
    modules = tuple((n, id(m), type(m), m.training) for n, m in model.named_modules())
    tensors = tuple(id(t) for t in model.parameters()) + tuple(id(t) for t in model.buffers())
    return modules, tensors


def _entry(model: nn.Module) -> _Entry:
    """The model's entry, fresh when its structure changed since the last one."""
    current = fingerprint(model)
    entry = _ENTRIES.get(model)
    if entry is None or entry.fingerprint != current:
        entry = _Entry(current)
        _ENTRIES[model] = entry
    return entry


def cached_split(model: nn.Module, layer: str, module: nn.Module) -> _split.FeatureRunner:
    """`split_model`, built once per model structure and layer.

    An `FxSplit` is shared (it keeps no state between calls); where the model cannot be split,
    the reason is kept and a `HookRunner` (cheap) is built and said each time, as `split_model`.
    """
    with _LOCK:
        entry = _entry(model)
        known = entry.splits.get(layer)
        if known is None:
            try:
                known = _split.FxSplit(model, layer)
            except _split.SplitError as exc:
                known = str(exc)
            entry.splits[layer] = known
    if isinstance(known, str):
        runner = _split.HookRunner(model, layer, module, reason=known)
        log.warning("%s", runner.note)
        return runner
    return known


def _owner(model: nn.Module) -> tuple[nn.Module, tuple[type, ...]]:
    """The innermost model ``model`` transparently wraps, and the wrappers' types on the way."""
    types: list[type] = []
    while True:
        inner = next(
            (v for k in ("inner", "wrapped") if isinstance(v := model.__dict__.get(k), nn.Module)),
            None,
        )
        if inner is None or inner._modules is not model._modules:
            return model, tuple(types)
        types.append(type(model))
        model = inner


def cached_layout(
    model: nn.Module,
    layer: str,
    size: tuple[int, int],
    channels: int,
    build: Callable[[], MapLayout] | None = None,
) -> MapLayout:
    """The layer's layout for inputs of ``size`` and ``channels``, probed once per structure.

    ``build`` makes it on a miss (default: `check_layer` with ``allow_point=True``, as a
    `BaseCAM` reads layers); its errors are not kept. Kept under `_owner` (see the module
    docstring); probed on ``model`` itself.
    """
    owner, wrappers = _owner(model)
    key = (layer, (int(size[0]), int(size[1])), int(channels), wrappers)
    with _LOCK:
        entry = _entry(owner)
        layout = entry.layouts.get(key)
    if layout is None:
        layout = build() if build is not None else _probe(model, layer, key[1], key[2])
        with _LOCK:
            if entry is _ENTRIES.get(owner):
                entry.layouts[key] = layout
    return layout


def _probe(model: nn.Module, layer: str, size: tuple[int, int], channels: int) -> MapLayout:
    layout = check_layer(model, layer, size, channels=channels, allow_point=True).layout
    if layout.grid == (1, 1):
        log.warning(
            "layer %s outputs one position (1x1) for a %dx%d input: its CAM is constant, so the "
            "maps are empty (all zero, as pytorch-grad-cam's)",
            layer,
            *size,
        )
    return layout


def clear_cache(model: nn.Module | None = None) -> None:
    """Forget the splits and layouts of ``model`` (None: of every model)."""
    with _LOCK:
        if model is None:
            _ENTRIES.clear()
        else:
            _ENTRIES.pop(model, None)
            _ENTRIES.pop(_owner(model)[0], None)
