"""Fast inference for the many forward passes of ScoreCAM and the perturbation metrics.

`InferenceEngine` wraps a classifier for inference only (logits of a batch, no autograd) and
picks the fastest exact path it can for the device:

* CPU, ``fp32``, enough passes to pay for a few seconds of set-up (``min_passes``), in order of
  preference (``backend="auto"``):

  1. ``onnxruntime``: the model exported to ONNX in memory and run by ONNX Runtime's CPU
     provider (fused conv/BN/activation kernels, strong depthwise convolutions); the fastest of
     the three where measured (BENCHMARKS.md, "ScoreCAM fast modes on this CPU").
  2. ``torchscript``: trace -> freeze -> ``optimize_for_inference`` (conv-BN folding, oneDNN
     layouts).
  3. ``eager``: the model as it is.

  Every compiled backend is checked against the eager model on the example batch when it is
  built (logits within 1e-3 of the logit range); a backend that cannot be built
  or disagrees is skipped, and the substitution is said on stderr and kept in ``engine.note``.
* CUDA: a channels_last copy of the model; ``bf16``/``fp16`` autocast when asked.
* CPU ``bf16``: autocast in eager mode (fast only on CPUs with native bf16; on AVX2-only CPUs it is
  *slower* than fp32: BENCHMARKS.md).

The engine snapshots the model's weights when it is built (a frozen trace or a copy): build a
new engine after changing the model.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
import warnings
from typing import Any, Literal

import torch
from torch import nn

log = logging.getLogger("camscope")

__all__ = ["BACKENDS", "Backend", "InferenceEngine", "Precision"]

Precision = Literal["fp32", "bf16", "fp16"]
Backend = Literal["auto", "onnxruntime", "torchscript", "eager"]
BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "torchscript", "eager")
_CPU_ORDER = ("onnxruntime", "torchscript")


class _OnnxRuntimeModule:
    """A classifier exported to ONNX (in memory) and run by ONNX Runtime on the CPU."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        import onnxruntime as ort  # a dependency; imported here to keep `import camscope` light

        if example.dtype != torch.float32:
            raise TypeError(f"the ONNX Runtime path runs float32 models, not {example.dtype}")
        buffer = io.BytesIO()
        exporter_args = inspect.signature(torch.onnx.export).parameters
        legacy = {"dynamo": False} if "dynamo" in exporter_args else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example[:1],),
                buffer,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=17,
                do_constant_folding=True,
                **legacy,  # the TorchScript-based exporter: no onnxscript needed
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        array = batch.detach().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(["logits"], {"input": array})[0])


def _build_torchscript(model: nn.Module, example: torch.Tensor) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


def _check(compiled: Any, model: nn.Module, example: torch.Tensor) -> None:
    """Raise if ``compiled`` does not give the eager model's logits on ``example``."""
    expected = model(example).float()
    got = compiled(example).float()
    if got.shape != expected.shape:
        raise RuntimeError(f"output shape {tuple(got.shape)} != {tuple(expected.shape)}")
    scale = float((expected.amax() - expected.amin()).clamp_min(1.0))
    error = float((got - expected).abs().max())
    if not error <= 1e-3 * scale:  # also catches NaN
        raise RuntimeError(f"logits differ from the eager model by {error:.3g}")


class InferenceEngine:
    """Logits for batches of inputs, as fast as the device allows.

    Args:
        model: classifier in eval mode.
        precision: ``fp32`` (exact), ``bf16`` or ``fp16`` (CUDA only) autocast.
        jit: compile the model on the CPU for fp32 (None: when it pays off, i.e. at least
            ``min_passes`` forward passes are expected; False: always eager).
        min_passes: with ``jit=None``, compile only once this many forward passes are expected.
        backend: ``"auto"`` (ONNX Runtime, else TorchScript, else eager, each substitution
            said), or one of ``"onnxruntime"``, ``"torchscript"``, ``"eager"`` to insist on it
            (an explicit backend that cannot be built raises). CPU fp32 only.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        precision: Precision = "fp32",
        jit: bool | None = None,
        min_passes: int = 128,
        backend: Backend = "auto",
    ) -> None:
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"unknown precision '{precision}' (fp32, bf16, fp16)")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}' ({', '.join(BACKENDS)})")
        self.backend = backend
        self.model = model
        self.precision = precision
        self.jit = jit
        self.min_passes = min_passes
        self._compiled: Any = None
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
        if self.backend == "auto":
            use_jit = self.jit if self.jit is not None else expected_passes >= self.min_passes
        else:
            use_jit = self.backend != "eager"
        if self.precision != "fp32" or not use_jit:
            self._compiled = self.model
            self.kind = f"eager {self.precision}"
            return
        order = _CPU_ORDER if self.backend == "auto" else (self.backend,)
        failures = []
        for name in order:
            try:
                with torch.no_grad():
                    if name == "onnxruntime":
                        compiled: Any = _OnnxRuntimeModule(self.model, example)
                    else:
                        compiled = _build_torchscript(self.model, example)
                    _check(compiled, self.model, example[:2])  # fails here, not mid-run
            except Exception as exc:  # noqa: BLE001 - any build failure: try the next backend
                if self.backend != "auto":
                    raise RuntimeError(
                        f"inference backend {name} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                failures.append(f"{name} ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})")
                continue
            self._compiled = compiled
            self.kind = f"{name} fp32"
            if failures:
                self._say(f"{'; '.join(failures)} unavailable; running {name} instead")
            return
        self._compiled = self.model
        self.kind = "eager fp32"
        self._say(f"{'; '.join(failures)} unavailable; running the model eagerly (slower)")

    def _say(self, text: str) -> None:
        self.note = f"inference engine: {text}"
        log.warning("%s", self.note)

    def release(self) -> None:
        """Drop the compiled copy (and its memory).

        ``kind`` and ``note`` keep describing the last build. The next call builds again, from
        the model's current weights.
        """
        self._compiled = None
        self._device = None

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
