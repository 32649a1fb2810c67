"""Fast inference for the many forward passes of ScoreCAM and the perturbation metrics.

`InferenceEngine` wraps a classifier for inference only (logits of a batch, no autograd) and
picks the fastest exact path it can for the device:

* CPU, ``fp32``: TorchScript trace -> freeze -> ``optimize_for_inference`` (conv-BN folding,
  oneDNN layouts). Measured on the 2-core AVX2 development machine: ~1.7x ResNet-50 and
  ~3x EfficientNet-Lite0 throughput over eager NCHW, outputs equal to ~1e-6 (BENCHMARKS.md).
  The trace costs a few seconds once, so it is used only when enough passes will follow
  (``min_passes``); a model that cannot be traced runs eagerly, said in ``engine.note``.
* CUDA: a channels_last copy of the model; ``bf16``/``fp16`` autocast when asked.
* CPU ``bf16``: autocast in eager mode (fast only on CPUs with native bf16; on AVX2-only CPUs it is
  several times *slower* than fp32 — measured, see BENCHMARKS.md).

The engine snapshots the model's weights when it is built (a frozen trace or a copy): build a
new engine after changing the model.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Literal

import torch
from torch import nn

__all__ = ["InferenceEngine", "Precision"]

Precision = Literal["fp32", "bf16", "fp16"]


class InferenceEngine:
    """Logits for batches of inputs, as fast as the device allows.

    Args:
        model: classifier in eval mode.
        precision: ``fp32`` (exact), ``bf16`` or ``fp16`` (CUDA only) autocast.
        jit: trace and freeze the model on the CPU for fp32 (None: when it pays off).
        min_passes: with ``jit=None``, trace only once this many forward passes are expected.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: Precision = "fp32",
        jit: bool | None = None,
        min_passes: int = 128,
    ) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision '{precision}' (fp32, bf16, fp16)")
        self.model = model
        self.precision = precision
        self.jit = jit
        self.min_passes = min_passes
        self._compiled: nn.Module | torch.jit.ScriptModule | None = None
        self._device: torch.device | None = None
        self.kind = "eager"
        self.note = ""

    def _build(self, example: torch.Tensor, expected_passes: int) -> None:
        device = example.device
        self._device = device
        if self.precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
        if device.type == "cuda":
            self._compiled = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
            self.kind = f"eager channels_last {self.precision}"
            return
        use_jit = self.jit if self.jit is not None else expected_passes >= self.min_passes
        if self.precision == "fp32" and use_jit:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(self.model, example, check_trace=False)
                    frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
                    frozen(example)  # run once: fails here rather than mid-run
                self._compiled = frozen
                self.kind = "torchscript frozen fp32"
                return
            except Exception as exc:  # noqa: BLE001 - any tracing failure: run eagerly
                self.note = (
                    f"TorchScript could not trace the model ({type(exc).__name__}); "
                    "ScoreCAM runs it eagerly (slower, same results)"
                )
                print(f"camscope: warning: {self.note}", file=sys.stderr)
        self._compiled = self.model
        self.kind = f"eager {self.precision}"

    def prepare(self, example: torch.Tensor, expected_passes: int) -> None:
        """Build the engine for inputs like ``example`` (first use, or a new device)."""
        if self._compiled is None or self._device != example.device:
            self._build(example, expected_passes)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 logits (B, num_classes) of a batch of normalised images (B, 3, H, W)."""
        if self._compiled is None or self._device != batch.device:
            self._build(batch, expected_passes=0)
        module = self._compiled
        assert module is not None
        with torch.no_grad():
            if self._device is not None and self._device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            if self.precision == "fp32":
                return module(batch).float()
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            with torch.autocast(batch.device.type, dtype=dtype):
                return module(batch).float()
