"""Class activation map methods: Grad-CAM, AblationCAM and ScoreCAM.

All three share one pipeline, owned by `BaseCAM`: take the target layer's activations
``A`` (N, C, h, w), let the method supply channel weights ``w`` (N, C), form

    L = ReLU(sum_k w_k A_k)                        (N, h, w), the "raw" map

then upsample ``L`` bilinearly (half-pixel centres) to the input size and min-max normalise each
map to [0, 1]. A map with no spatial variation (all zero after the ReLU, typically) stays all
zero, is never NaN, and is flagged ``empty``.

Everything stays a torch tensor on the input's device; work is batched and chunked; no NumPy
round trips. The methods only need the part of the network after the target layer where they
re-evaluate it, which `camscope.split` provides (a torch.fx split, or a hook-based full re-run
where a model cannot be split — said on stderr and in ``cam.notes``).

Usage::

    with GradCAM(model, "layer4[-1]") as cam:
        maps = cam(inputs)                 # (N, H, W) in [0, 1], top-1 class
        result = cam.explain(inputs, targets=[207, 281])
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from camscope.engine import Backend, InferenceEngine, Precision
from camscope.models import resolve_layer
from camscope.split import FeatureRunner, HookRunner, SplitError, split_model

__all__ = [
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "GradCAM",
    "ScoreCAM",
    "Targets",
    "normalise_maps",
]

Targets = int | Sequence[int] | torch.Tensor | None


@dataclass
class CAMResult:
    """The output of `BaseCAM.explain` for a batch of N images.

    Attributes:
        maps: (N, H, W) float32 in [0, 1] at the input size.
        raw: (N, h, w) float32, ``ReLU(sum_k w_k A_k)`` at the layer's resolution.
        weights: (N, C) float32 channel weights.
        targets: (N,) int64 target classes.
        logits: (N, num_classes) float32 logits of the unmodified inputs.
        empty: (N,) bool, True where the map has no spatial variation (all zero).
        info: method-specific counters (e.g. channels run through the model).
    """

    maps: torch.Tensor
    raw: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor
    empty: torch.Tensor
    info: dict[str, float] = field(default_factory=dict)


def normalise_maps(raw: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Upsample (N, h, w) maps bilinearly to ``size`` and min-max normalise each to [0, 1].

    Returns ``(maps, empty)``. A map that is flat at the layer's resolution (all zero after
    the ReLU, typically) becomes all zeros and is flagged: flatness is decided on ``raw``, where
    it is exact, since bilinear weights can add one-ulp ripples to a constant map.
    """
    flat_raw = raw.flatten(1)
    empty = flat_raw.amax(dim=1) <= flat_raw.amin(dim=1)
    up = F.interpolate(raw[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    low = up.amin(dim=(1, 2), keepdim=True)
    span = up.amax(dim=(1, 2), keepdim=True) - low
    keep = (~empty)[:, None, None] & (span > 0)
    maps = torch.where(keep, (up - low) / span.clamp_min(torch.finfo(up.dtype).tiny), 0.0)
    return maps, empty | ~keep.flatten()


CPU_CHUNK_BYTES = 1 << 30
ABLATION_CPU_BATCH_BYTES = 32 << 20


def _default_chunk(device: torch.device, bytes_per_item: int) -> int:
    """How many items (masked images, ablated activations) to push through at once.

    ``bytes_per_item`` estimates the peak memory one item needs (input plus intermediates).
    On CUDA the chunk takes 40% of the currently free device memory; on the CPU it takes
    `CPU_CHUNK_BYTES` (1 GiB), where throughput has long saturated (ResNet-50 ScoreCAM: ~40
    masked images per pass).
    """
    budget = CPU_CHUNK_BYTES
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = int(0.4 * free)
    return max(1, budget // max(bytes_per_item, 1))


class BaseCAM:
    """Shared machinery: layer lookup, the feature/classify runner, targets, normalisation.

    Subclasses implement `weights`; everything else (hooks, shape checks, normalisation,
    cleanup) lives here.

    Args:
        model: a classifier in eval mode mapping (N, 3, H, W) to (N, num_classes) logits.
        layer: target layer as a path (``"layer4[-1]"``, ``"layer4.2"``) or the module itself.
    """

    name = "base"
    uses_split = True

    def __init__(self, model: nn.Module, layer: str | nn.Module) -> None:
        self.model = model
        self.layer, self.module = resolve_layer(model, layer)
        if model.training:
            warnings.warn(
                "the model is in training mode; CAMs are meant for eval mode (model.eval())",
                stacklevel=2,
            )
        self._runner: FeatureRunner | None = None
        self.notes: list[str] = []

    # -- context manager / cleanup -----------------------------------------------------------
    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the split graphs. Hooks never outlive a call, so there is nothing else."""
        self._runner = None

    # -- runner ------------------------------------------------------------------------------
    @property
    def runner(self) -> FeatureRunner:
        if self._runner is None:
            if self.uses_split:
                self._runner = split_model(self.model, self.layer, self.module)
            else:
                self._runner = HookRunner(self.model, self.layer, self.module, "not needed")
                self._runner.note = "hook on the target layer"
            if not self._runner.exact_split and self.uses_split:
                self.notes.append(self._runner.note)
        return self._runner

    def _features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        try:
            return self.runner.features(inputs)
        except SplitError as exc:
            self._runner = HookRunner(self.model, self.layer, self.module, reason=str(exc))
            print(f"camscope: warning: {self._runner.note}", file=sys.stderr)
            self.notes.append(self._runner.note)
            return self._runner.features(inputs)

    # -- public API --------------------------------------------------------------------------
    def __call__(self, inputs: torch.Tensor, targets: Targets = None) -> torch.Tensor:
        """Maps (N, H, W) in [0, 1] for a batch of normalised images (N, 3, H, W)."""
        return self.explain(inputs, targets).maps

    def explain(self, inputs: torch.Tensor, targets: Targets = None) -> CAMResult:
        """Compute the maps and everything behind them for a batch.

        Args:
            inputs: (N, 3, H, W) float tensor, normalised as the model expects.
            targets: None (each image's top-1 class), one class index for all images, or one
                index per image (a sequence or (N,) tensor; a length mismatch is an error).
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            raise ValueError(f"inputs must be a (N, C, H, W) tensor, got {_describe(inputs)}")
        if not inputs.is_floating_point():
            raise ValueError(f"inputs must be floating point, got {inputs.dtype}")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("CAMs cannot be computed inside torch.inference_mode()")
        # An inference tensor (made under torch.inference_mode) cannot be saved for backward,
        # which Grad-CAM through the hook fallback needs: use a normal copy.
        inputs = inputs.detach().clone() if inputs.is_inference() else inputs.detach()
        with torch.no_grad():
            activations, cache = self._features(inputs)
            if activations.dim() != 4:
                raise ValueError(
                    f"layer {self.layer} outputs shape {tuple(activations.shape)}; CAMs need a "
                    "(N, C, h, w) feature map (use a convolutional layer)"
                )
            logits = self.runner.classify(activations, cache).float()
        target_idx = _resolve_targets(targets, logits)
        weights, info = self.weights(inputs, activations, cache, logits, target_idx)
        with torch.no_grad():
            # float64 sum: the weighted channels often cancel, float32 rounding would show
            raw = F.relu(torch.einsum("nc,nchw->nhw", weights.double(), activations.double()))
            raw = raw.float()
            maps, empty = normalise_maps(raw, tuple(inputs.shape[-2:]))  # type: ignore[arg-type]
        return CAMResult(maps, raw, weights.float(), target_idx, logits, empty, info)

    def weights(
        self,
        inputs: torch.Tensor,
        activations: torch.Tensor,
        cache: tuple[torch.Tensor, ...],
        logits: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Channel weights (N, C) for the batch, plus method counters."""
        raise NotImplementedError


class GradCAM(BaseCAM):
    r"""Grad-CAM (Selvaraju et al., ICCV 2017, https://arxiv.org/abs/1610.02391).

    .. math::
        \alpha_k^c = \frac{1}{hw}\sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}}, \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k \alpha_k^c A^k\Big)

    with :math:`y^c` the pre-softmax logit of class c. Gradients are taken with respect to the
    layer's output only: the layers before it run without autograd, backward runs through the
    tail of the network alone.
    """

    name = "gradcam"

    def weights(self, inputs, activations, cache, logits, targets):  # noqa: D102
        leaf = activations.detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.runner.classify(leaf, cache)
            score = out.gather(1, targets[:, None].to(out.device)).sum()
            (grads,) = torch.autograd.grad(score, leaf)
        return grads.float().mean(dim=(2, 3)), {}


class AblationCAM(BaseCAM):
    r"""AblationCAM (Desai & Ramaswamy, WACV 2020,
    https://openaccess.thecvf.com/content_WACV_2020/html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.html),
    as pytorch-grad-cam computes it.

    .. math::
        w_k^c = \frac{y^c - y^c_k}{y^c}, \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    with :math:`y^c` the logit of class c and :math:`y^c_k` the logit with channel k of A set to
    zero. A is computed once; only the network after the layer is re-run, on chunks of ablated
    activations (``chunk_size`` ablations at a time; if None, chosen from the device's memory,
    and on the CPU capped so that one ablated batch is at most `ABLATION_CPU_BATCH_BYTES`,
    32 MiB: EfficientNet-Lite0 ``bn2`` 0.20 s/image at 128 ablations per batch against 0.38 s
    at 256, measured on the 2-core development CPU).
    """

    name = "ablationcam"

    def __init__(
        self, model: nn.Module, layer: str | nn.Module, *, chunk_size: int | None = None
    ) -> None:
        super().__init__(model, layer)
        self.chunk_size = chunk_size

    def weights(self, inputs, activations, cache, logits, targets):  # noqa: D102
        n, channels = activations.shape[:2]
        act_bytes = activations[0].numel() * activations.element_size()
        chunk = self.chunk_size or _default_chunk(activations.device, act_bytes * 16)
        if self.chunk_size is None and activations.device.type == "cpu":
            # the tail is cheap; what costs is copying the ablated batch: keep it in cache
            chunk = min(chunk, max(1, ABLATION_CPU_BATCH_BYTES // act_bytes))
        chunk = min(chunk, channels)
        weights = torch.empty(n, channels, device=activations.device)
        with torch.no_grad():
            for i in range(n):
                base = logits[i, targets[i]]
                for start in range(0, channels, chunk):
                    ks = torch.arange(
                        start, min(start + chunk, channels), device=activations.device
                    )
                    batch = activations[i : i + 1].repeat(len(ks), 1, 1, 1)
                    batch[torch.arange(len(ks)), ks] = 0
                    out = self.runner.classify(batch, self.runner.expand_cache(cache, i, len(ks)))
                    weights[i, ks] = (base - out[:, targets[i]].float()) / base
        return weights, {"ablations": float(n * channels)}


class ScoreCAM(BaseCAM):
    r"""ScoreCAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279).

    ``variant="reference"`` (default) follows the authors' reference code::

        M_k = minmax(upsample_bilinear(A_k))        at the input size, in [0, 1]
        s_k = softmax(f(x * M_k))_c                 x the normalised input
        L   = ReLU(sum_k s_k A_k)

    A channel whose map is constant has no mask; it gets s_k = 0 and is not run through the model.
    Channels whose masks are equal (maps equal after min-max normalisation — common after a
    clipping activation such as ReLU6) are run once and share the score.

    ``variant="pytorch-grad-cam"`` reproduces pytorch-grad-cam 1.5's weights:
    ``w = softmax_k(f(x * M_k)_c)``, a softmax *across channels* of the raw logits, with masks
    upsampled with ``align_corners=True`` and normalised by ``max - min + 1e-8``. That softmax
    favours the channels with the largest logits (on the seed study's ten images with
    EfficientNet-Lite0 the strongest channel gets 5 % of the weight on average, against 2.5 %
    with the reference formula; the maps stay non-empty there). Constant channels (mask all
    zero) are scored once, with the all-zero input, and share that logit.

    Args:
        variant: ``"reference"`` or ``"pytorch-grad-cam"``.
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast for the masked forward
            passes (fp16 on CUDA only). Scores are accumulated in float32.
        max_channels: if set, only the K non-constant channels with the highest activation
            variance are scored ("Faster Score-CAM"); the others get weight 0.
        chunk_size: masked images per forward pass; None chooses from the device's memory.
        jit: on the CPU in fp32, run the masked passes through a compiled copy of the model
            (ONNX Runtime or a frozen TorchScript trace; exact to ~1e-5, 1.3-6x faster than
            eager); None decides by the number of passes, False always runs eagerly. See
            `camscope.engine.InferenceEngine`. The engine snapshots the model's weights on first
            use: make a new ScoreCAM after changing the model.
        backend: the engine's backend (``"auto"``, ``"onnxruntime"``, ``"torchscript"``,
            ``"eager"``); see `camscope.engine.InferenceEngine`.
    """

    name = "scorecam"
    uses_split = False

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        variant: Literal["reference", "pytorch-grad-cam"] = "reference",
        precision: Precision = "fp32",
        max_channels: int | None = None,
        chunk_size: int | None = None,
        jit: bool | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(model, layer)
        if variant not in ("reference", "pytorch-grad-cam"):
            raise ValueError(f"unknown ScoreCAM variant '{variant}'")
        if max_channels is not None and max_channels < 1:
            raise ValueError("max_channels must be >= 1")
        self.variant = variant
        self.precision = precision
        self.max_channels = max_channels
        self.chunk_size = chunk_size
        self.engine = InferenceEngine(model, precision=precision, jit=jit, backend=backend)

    def close(self) -> None:
        """Release the split graphs and the inference engine's compiled copy."""
        super().close()
        self.engine.release()

    def _masks(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(k, h, w) activation maps -> (k, 1, H, W) masks in [0, 1]."""
        if self.variant == "reference":
            up = F.interpolate(maps[:, None].float(), size, mode="bilinear", align_corners=False)
            low = up.amin(dim=(2, 3), keepdim=True)
            return (up - low) / (up.amax(dim=(2, 3), keepdim=True) - low)
        up = F.interpolate(maps[:, None].float(), size, mode="bilinear", align_corners=True)
        low = up.amin(dim=(2, 3), keepdim=True)
        return (up - low) / (up.amax(dim=(2, 3), keepdim=True) - low + 1e-8)

    def _channels(self, flat: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        """Indices of the channels to score for one image: non-constant, top-K by variance."""
        active = (~constant).nonzero().flatten()
        if self.max_channels is not None and len(active) > self.max_channels:
            top = flat[active].var(dim=1).topk(self.max_channels).indices
            active = active[top.sort().values]
        return active

    def _distinct(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, h*w) maps -> (a representative map per distinct mask, each map's mask index)."""
        if len(maps) == 0:
            empty = torch.zeros(0, dtype=torch.long, device=maps.device)
            return empty, empty
        key = maps
        if self.variant == "reference":
            low = maps.amin(dim=1, keepdim=True)
            key = (maps - low) / (maps.amax(dim=1, keepdim=True) - low)
        _, inverse = torch.unique(key, dim=0, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), len(maps), device=maps.device)
        index = torch.arange(len(maps), device=maps.device)
        return first.scatter_reduce(0, inverse, index, "amin"), inverse

    def weights(self, inputs, activations, cache, logits, targets):  # noqa: D102
        n, channels = activations.shape[:2]
        size = tuple(inputs.shape[-2:])
        device = inputs.device
        chunk = self.chunk_size or _default_chunk(device, 40 * inputs[0].numel() * 4)
        flat = activations.float().flatten(2)
        constant = flat.amax(dim=2) == flat.amin(dim=2)  # (N, C)
        selected = [self._channels(flat[i], constant[i]) for i in range(n)]
        expected = sum(len(a) for a in selected)
        self.engine.prepare(inputs[:1].expand(min(chunk, max(expected, 1)), -1, -1, -1), expected)
        weights = torch.zeros(n, channels, device=device)
        run = duplicates = 0
        with torch.no_grad():
            for i in range(n):
                active, c = selected[i], targets[i]
                # channels with the same mask are run once: equal maps after min-max
                # normalisation (reference: upsampling and min-max commute with a positive
                # affine change of the map) or equal raw maps (pytorch-grad-cam's +1e-8)
                distinct, inverse = self._distinct(flat[i, active])
                duplicates += len(active) - len(distinct)
                scores = torch.zeros(channels, device=device)
                distinct_scores = torch.empty(len(distinct), device=device)
                for start in range(0, len(distinct), chunk):
                    ks = active[distinct[start : start + chunk]]
                    masks = self._masks(activations[i, ks], size)  # type: ignore[arg-type]
                    out = self.engine(inputs[i : i + 1] * masks)
                    distinct_scores[start : start + len(ks)] = (
                        out.softmax(dim=1)[:, c] if self.variant == "reference" else out[:, c]
                    )
                scores[active] = distinct_scores[inverse]
                run += len(distinct)
                if self.variant == "reference":
                    weights[i] = scores
                    continue
                considered = torch.zeros(channels, dtype=torch.bool, device=device)
                considered[active] = True
                if self.max_channels is None and bool(constant[i].any()):
                    # every constant channel's mask is all zero: one pass scores them all
                    scores[constant[i]] = self.engine(torch.zeros_like(inputs[i : i + 1]))[0, c]
                    considered |= constant[i]
                    run += 1
                weights[i, considered] = scores[considered].softmax(dim=0)
        if self.engine.note and self.engine.note not in self.notes:
            self.notes.append(self.engine.note)
        return weights, {
            "channels_run": float(run),
            "constant_channels": float(constant.sum()),
            "duplicate_channels": float(duplicates),
            "channels": float(n * channels),
        }


def _resolve_targets(targets: Targets, logits: torch.Tensor) -> torch.Tensor:
    n, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    if isinstance(targets, int):
        result = torch.full((n,), targets, dtype=torch.long, device=logits.device)
    else:
        result = torch.as_tensor(targets, dtype=torch.long).to(logits.device)
        if result.dim() == 0:  # a 0-d tensor or NumPy integer: one class for all, like an int
            result = result.expand(n).clone()
        result = result.flatten()
        if len(result) != n:
            raise ValueError(f"got {len(result)} targets for a batch of {n} images")
    if len(result) and (int(result.min()) < 0 or int(result.max()) >= num_classes):
        raise ValueError(f"target class out of range 0..{num_classes - 1}: {result.tolist()}")
    return result


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


METHODS: dict[str, type[BaseCAM]] = {
    GradCAM.name: GradCAM,
    AblationCAM.name: AblationCAM,
    ScoreCAM.name: ScoreCAM,
}
