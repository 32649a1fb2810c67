"""Perturbation CAMs: weights from how the target score changes when the input or the layer is
modified (AblationCAM, ScoreCAM and its smoothed variants, RISE) and the random baseline.

Layer perturbations (AblationCAM) re-run only the network after the layer; input perturbations
(ScoreCAM family, RISE) run the whole model through `camscope.engine.InferenceEngine`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from camscope.engine import BACKENDS, Backend, InferenceEngine, Precision
from camscope.methods.base import BaseCAM, CAMContext, default_chunk
from camscope.methods.registry import OptionSpec, register

__all__ = ["AblationCAM", "ScoreCAM"]

ABLATION_CPU_BATCH_BYTES = 32 << 20
PGC_ABLATION_OFFSET = 1e7  # pytorch-grad-cam's AblationLayer.ABLATION_VALUE
PGC_ABLATION_BATCH = 32  # pytorch-grad-cam's AblationCAM default batch_size

PRECISION = OptionSpec(
    "precision", "--precision", ("fp32", "bf16", "fp16"), "fp32",
    "Masked forward passes: exact fp32, or bf16/fp16 autocast (fp16 on CUDA only).",
)  # fmt: skip
BACKEND = OptionSpec(
    "backend", "--backend", BACKENDS, "auto",
    "Inference engine for the masked passes (auto: ONNX Runtime, else TorchScript, else eager).",
)  # fmt: skip
MAX_CHANNELS = OptionSpec(
    "max_channels", "--max-channels", int, None,
    "Score only the K highest-variance channels (Faster Score-CAM); cost K passes per image.",
    minimum=1,
)  # fmt: skip


class _Adapted(nn.Module):
    """The model followed by the CAM's output adapter, for the inference engine."""

    def __init__(self, model: nn.Module, adapt: Any) -> None:
        super().__init__()
        self.model = model
        self.adapt = adapt
        self.train(model.training)  # exporters restore this mode on the whole tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.adapt(self.model(x))


@register(
    "ablationcam",
    label="AblationCAM",
    family="perturbation",
    paper="Desai & Ramaswamy, WACV 2020, https://openaccess.thecvf.com/content_WACV_2020/html/"
    "Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_"
    "Localization_WACV_2020_paper.html",
    cost="C forward passes through the tail (C = the layer's channels)",
    options=(
        OptionSpec(
            "ablation_value", "--ablation-value", ("zero", "pytorch-grad-cam"), "zero",
            "What an ablated channel is set to: zero (the paper) or pytorch-grad-cam's "
            "min - 1e7 (when the layer's minimum is not 0).",
        ),
    ),
    aliases=("ablation-cam", "ablation"),
)  # fmt: skip
class AblationCAM(BaseCAM):
    r"""AblationCAM (Desai & Ramaswamy, WACV 2020).

    .. math::
        w_k^c = \frac{y^c - y^c_k}{y^c}, \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    with :math:`y^c` the target score and :math:`y^c_k` the score with channel k of A ablated.
    ``ablation_value="zero"`` (the paper's) sets the channel to 0. ``"pytorch-grad-cam"``
    reproduces pytorch-grad-cam 1.5: when the image's activations have a minimum m that is not
    0, its ablation layer writes ``min(batch) - 1e7`` row after row of a batch of 32 ablations,
    so the j-th channel of each batch of 32 gets m - (j+1) * 1e7; with m = 0 it writes 0. The
    two differ where activations can be negative (MobileNetV3 ``features[-1]``, say).

    A is computed once; only the network after the layer is re-run, on chunks of ablated
    activations (``chunk_size``; None: from the device's memory, on the CPU at most
    `ABLATION_CPU_BATCH_BYTES` of ablated activations per pass).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> AblationCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        chunk_size: int | None = None,
        ablation_value: Literal["zero", "pytorch-grad-cam"] = "zero",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if ablation_value not in ("zero", "pytorch-grad-cam"):
            raise ValueError(f"unknown ablation_value '{ablation_value}' (zero, pytorch-grad-cam)")
        self.chunk_size = chunk_size
        self.ablation_value = ablation_value

    def _values(self, acts: torch.Tensor) -> torch.Tensor:
        """(C,) the value each channel of one image's (C, h, w) map is ablated with."""
        channels = acts.shape[0]
        low = acts.min()
        if self.ablation_value == "zero" or bool(low == 0):
            return torch.zeros(channels, dtype=acts.dtype, device=acts.device)
        steps, value = [], low
        for _ in range(PGC_ABLATION_BATCH):  # in the activations' dtype, as pgc rounds
            value = value - PGC_ABLATION_OFFSET
            steps.append(value)
        offsets = torch.stack(steps)
        return offsets[torch.arange(channels, device=acts.device) % PGC_ABLATION_BATCH]

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts = ctx.activations
        assert acts is not None
        n, channels = acts.shape[:2]
        act_bytes = acts[0].numel() * acts.element_size()
        chunk = self.chunk_size or default_chunk(acts.device, act_bytes * 16)
        if self.chunk_size is None and acts.device.type == "cpu":
            # the tail is cheap; what costs is copying the ablated batch: keep it in cache
            chunk = min(chunk, max(1, ABLATION_CPU_BATCH_BYTES // act_bytes))
        chunk = min(chunk, channels)
        weights = torch.empty(n, channels, device=acts.device, dtype=torch.float64)
        base = ctx.targets.scores(ctx.logits).double()
        with torch.no_grad():
            for i in range(n):
                values = self._values(acts[i])
                for start in range(0, channels, chunk):
                    ks = torch.arange(start, min(start + chunk, channels), device=acts.device)
                    batch = acts[i : i + 1].repeat(len(ks), 1, 1, 1)
                    batch[torch.arange(len(ks)), ks] = values[ks, None, None]
                    scores = self.classify_maps(ctx, batch, i).double()
                    weights[i, ks] = (base[i] - scores) / base[i]
        ctx.info["ablations"] = float(n * channels)
        return weights


@register(
    "scorecam",
    label="ScoreCAM",
    family="perturbation",
    paper="Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279",
    cost="C forward passes of the whole model (C = the layer's channels; K with --max-channels)",
    options=(
        OptionSpec(
            "variant", "--scorecam-variant", ("reference", "pytorch-grad-cam"), "reference",
            "ScoreCAM weights: the authors' (softmax over classes) or pytorch-grad-cam's "
            "(softmax over channels).",
        ),
        PRECISION,
        MAX_CHANNELS,
        BACKEND,
    ),
    sanity_options={"max_channels": 64},
    aliases=("score-cam",),
)  # fmt: skip
class ScoreCAM(BaseCAM):
    r"""ScoreCAM (Wang et al., CVPR-W 2020, https://arxiv.org/abs/1910.01279).

    ``variant="reference"`` (default) follows the authors' reference code::

        M_k = minmax(upsample_bilinear(A_k))        at the input size, in [0, 1]
        s_k = softmax(f(x * M_k))_c                 x the normalised input
        L   = ReLU(sum_k s_k A_k)

    (a callable target is applied to the softmax of the output). A channel whose map is
    constant has no mask; it gets s_k = 0 and is not run through the model. Channels whose masks
    are equal (common after a clipping activation such as ReLU6) are run once.

    ``variant="pytorch-grad-cam"`` reproduces pytorch-grad-cam 1.5's weights:
    ``w = softmax_k(f(x * M_k)_c)``, a softmax *across channels* of the raw scores, with masks
    upsampled with ``align_corners=True`` and normalised by ``max - min + 1e-8``. Constant
    channels (mask all zero) are scored once, with the all-zero input, and share that score.

    Args:
        variant: ``"reference"`` or ``"pytorch-grad-cam"``.
        precision: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast for the masked passes.
        max_channels: if set, only the K non-constant channels with the highest activation
            variance are scored ("Faster Score-CAM"); the others get weight 0.
        chunk_size: masked images per forward pass; None chooses from the device's memory.
        jit: compile the model for the masked passes (see `camscope.engine.InferenceEngine`).
        backend: the engine's backend.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> ScoreCAM(model, "layer4[-1]", max_channels=8)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    uses_split = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        variant: Literal["reference", "pytorch-grad-cam"] = "reference",
        precision: Precision = "fp32",
        max_channels: int | None = None,
        chunk_size: int | None = None,
        jit: bool | None = None,
        backend: Backend = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if variant not in ("reference", "pytorch-grad-cam"):
            raise ValueError(f"unknown ScoreCAM variant '{variant}'")
        if max_channels is not None and max_channels < 1:
            raise ValueError("max_channels must be >= 1")
        self.variant = variant
        self.precision = precision
        self.max_channels = max_channels
        self.chunk_size = chunk_size
        self.engine = InferenceEngine(
            _Adapted(model, self.adapt), precision=precision, jit=jit, backend=backend
        )

    def close(self) -> None:
        """Release the split graphs and the inference engine's compiled copy."""
        super().close()
        self.engine.release()

    def _masks(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(k, h, w) activation maps -> (k, 1, H, W) masks in [0, 1]."""
        reference = self.variant == "reference"
        up = F.interpolate(
            maps[:, None].float(), size, mode="bilinear", align_corners=not reference
        )
        low = up.amin(dim=(2, 3), keepdim=True)
        span = up.amax(dim=(2, 3), keepdim=True) - low
        return (up - low) / (span if reference else span + 1e-8)

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

    def _score(self, ctx: CAMContext, batch: torch.Tensor, image: int) -> torch.Tensor:
        """(B,) image ``image``'s target score on a batch of masked inputs."""
        out = self.engine(batch)
        if self.variant == "reference":
            out = out.softmax(dim=1)
        return ctx.targets.rows(out, image).float()

    def _image_scores(
        self, ctx: CAMContext, i: int, active: torch.Tensor, chunk: int, flat: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """(C,) scores of image i's ``active`` channels (others 0), and the passes run."""
        acts = ctx.activations
        assert acts is not None
        size = tuple(ctx.inputs.shape[-2:])
        # channels with the same mask are run once: equal maps after min-max normalisation
        # (reference: upsampling and min-max commute with a positive affine change of the map)
        # or equal raw maps (pytorch-grad-cam's +1e-8)
        distinct, inverse = self._distinct(flat[i, active])
        scores = torch.zeros(acts.shape[1], device=acts.device)
        distinct_scores = torch.empty(len(distinct), device=acts.device)
        for start in range(0, len(distinct), chunk):
            ks = active[distinct[start : start + chunk]]
            masks = self._masks(acts[i, ks], size)  # type: ignore[arg-type]
            distinct_scores[start : start + len(ks)] = self._score(
                ctx, ctx.inputs[i : i + 1] * masks, i
            )
        scores[active] = distinct_scores[inverse]
        return scores, len(distinct)

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts, inputs = ctx.activations, ctx.inputs
        assert acts is not None
        n, channels = acts.shape[:2]
        device = inputs.device
        chunk = self.chunk_size or default_chunk(device, 40 * inputs[0].numel() * 4)
        flat = acts.float().flatten(2)
        constant = flat.amax(dim=2) == flat.amin(dim=2)  # (N, C)
        selected = [self._channels(flat[i], constant[i]) for i in range(n)]
        expected = sum(len(a) for a in selected)
        self.engine.prepare(inputs[:1].expand(min(chunk, max(expected, 1)), -1, -1, -1), expected)
        weights = torch.zeros(n, channels, device=device)
        run = distinct = 0
        with torch.no_grad():
            for i in range(n):
                scores, passes = self._image_scores(ctx, i, selected[i], chunk, flat)
                run += passes
                distinct += passes
                if self.variant == "reference":
                    weights[i] = scores
                    continue
                considered = torch.zeros(channels, dtype=torch.bool, device=device)
                considered[selected[i]] = True
                if self.max_channels is None and bool(constant[i].any()):
                    # every constant channel's mask is all zero: one pass scores them all
                    zero = torch.zeros_like(inputs[i : i + 1])
                    scores[constant[i]] = self._score(ctx, zero, i)[0]
                    considered |= constant[i]
                    run += 1
                weights[i, considered] = scores[considered].softmax(dim=0)
        if self.engine.note and self.engine.note not in self.notes:
            self.notes.append(self.engine.note)
        ctx.info.update(
            channels_run=float(run),
            constant_channels=float(constant.sum()),
            duplicate_channels=float(expected - distinct),
            channels=float(n * channels),
        )
        return weights
