"""Perturbation CAMs and the random baseline.

Weights come from how the target score changes when the input or the layer is modified
(AblationCAM, ScoreCAM and its smoothed variants, RISE).

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
from camscope.methods.gradient import SEED, seeded_normal
from camscope.methods.registry import OptionSpec, register

__all__ = ["ISCAM", "RISE", "SSCAM", "AblationCAM", "RandomCAM", "ScoreCAM"]

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
        self.training = False  # the engine runs inside `eval_mode` (the model in eval mode)

    def train(self, mode: bool = True) -> _Adapted:
        """Set this wrapper's flag only.

        The model's modes are `camscope.methods.base.eval_mode`'s to set and restore: an
        exporter's ``train(saved)`` on the whole tree must not put the model in training mode
        in the middle of an explanation.
        """
        self.training = mode
        return self

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
    r"""AblationCAM: channel weights from the score drop when the channel is ablated.

    Desai & Ramaswamy, WACV 2020, https://openaccess.thecvf.com/content_WACV_2020/
    html/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_
    Localization_WACV_2020_paper.html.

    .. math::
        w_k^c = \frac{y^c - y^c_k}{y^c}, \qquad L^c = \mathrm{ReLU}\Big(\sum_k w_k^c A^k\Big)

    with :math:`y^c` the target score and :math:`y^c_k` the score with channel k of A ablated.
    ``ablation_value="zero"`` (the paper's; the registry's and the CLI's default) sets the
    channel to 0. ``"pytorch-grad-cam"`` (this class's default, as pytorch-grad-cam 1.5):
    when the image's activations have a minimum m that is not 0, its ablation layer writes
    ``min(batch) - 1e7`` row after row of a batch of ``batch_size`` ablations, so the j-th
    channel of each batch gets m - (j+1) * 1e7; with m = 0 it writes 0. The two differ where
    activations can be negative (MobileNetV3 ``features[-1]``, say).

    ``ablation_layer`` (pytorch-grad-cam's `AblationLayer`, `AblationLayerVit`,
    `AblationLayerFasterRCNN` or a subclass) ablates the layer's own output (a ViT's class
    token included) through pytorch-grad-cam's protocol (`camscope.methods.ablation_layers`);
    ``ratio_channels_to_ablate`` below 1 uses that protocol too (pytorch-grad-cam's
    experiment: skipped channels get weight 0).

    A is computed once; only the network after the layer is re-run, on chunks of ablated
    activations (``chunk_size``; None: from the device's memory, on the CPU at most
    `ABLATION_CPU_BATCH_BYTES` of ablated activations per pass).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> AblationCAM(model, "layer4[-1]")(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        ablation_layer: Any = None,
        batch_size: int = PGC_ABLATION_BATCH,
        ratio_channels_to_ablate: float = 1.0,
        *,
        chunk_size: int | None = None,
        ablation_value: Literal["zero", "pytorch-grad-cam"] = "pytorch-grad-cam",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        if ablation_value not in ("zero", "pytorch-grad-cam"):
            raise ValueError(f"unknown ablation_value '{ablation_value}' (zero, pytorch-grad-cam)")
        if not 0 < ratio_channels_to_ablate <= 1:
            raise ValueError("ratio_channels_to_ablate must be in (0, 1]")
        pgc_protocol = ablation_layer is not None or ratio_channels_to_ablate < 1
        if ablation_value == "zero" and pgc_protocol:
            raise ValueError("ablation_value='zero' ablates all channels without ablation_layer")
        self.chunk_size = chunk_size
        self.ablation_value = ablation_value
        self.ablation_layer = ablation_layer
        self.batch_size = batch_size
        self.ratio_channels_to_ablate = ratio_channels_to_ablate

    def _values(self, acts: torch.Tensor) -> torch.Tensor:
        """(C,) the value each channel of one image's (C, h, w) map is ablated with."""
        channels = acts.shape[0]
        low = acts.min()
        if self.ablation_value == "zero" or bool(low == 0):
            return torch.zeros(channels, dtype=acts.dtype, device=acts.device)
        steps, value = [], low
        for _ in range(int(self.batch_size)):  # in the activations' dtype, as pgc rounds
            value = value - PGC_ABLATION_OFFSET
            steps.append(value)
        offsets = torch.stack(steps)
        return offsets[torch.arange(channels, device=acts.device) % int(self.batch_size)]

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        if self.ablation_layer is not None or self.ratio_channels_to_ablate < 1:
            return self._layer_weights(ctx)
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

    def _layer_weights(self, ctx: CAMContext) -> torch.Tensor:
        """Weights through pytorch-grad-cam's ablation-layer protocol (the layer's own output)."""
        from camscope.methods.ablation_layers import AblationLayer

        acts, output, runner = ctx.activations, ctx.output, ctx.runner
        assert acts is not None and output is not None and runner is not None
        layer = self.ablation_layer if self.ablation_layer is not None else AblationLayer()
        n, channels = acts.shape[:2]
        base = ctx.targets.scores(ctx.logits).double()
        weights = torch.zeros(n, channels, device=acts.device, dtype=torch.float64)
        size = int(self.batch_size)
        ablations = 0
        with torch.no_grad():
            for i in range(n):
                order = layer.activations_to_be_ablated(
                    acts[i].cpu().numpy(), self.ratio_channels_to_ablate
                )
                order = [int(k) for k in order]
                for start in range(0, len(order), size):
                    count = min(size, len(order) - start)
                    layer.set_next_batch(
                        input_batch_index=i, activations=output, num_channels_to_ablate=count
                    )
                    ablated = layer(output[i : i + 1])
                    out = runner.classify(ablated, runner.expand_cache(ctx.cache, i, count))
                    scores = ctx.targets.rows(self.adapt(out), i).double()
                    ks = torch.tensor(order[start : start + count], device=acts.device)
                    weights[i, ks] = (base[i] - scores) / base[i]
                    layer.indices = layer.indices[count:]
                    ablations += count
        ctx.info["ablations"] = float(ablations)
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

    ``variant="reference"`` (the registry's and the CLI's default) follows the authors'
    reference code::

        M_k = minmax(upsample_bilinear(A_k))        at the input size, in [0, 1]
        s_k = softmax(f(x * M_k))_c                 x the normalised input
        L   = ReLU(sum_k s_k A_k)

    (a callable target is applied to the softmax of the output). A channel whose map is
    constant has no mask; it gets s_k = 0 and is not run through the model. Channels whose masks
    are equal (common after a clipping activation such as ReLU6) are run once.

    ``variant="pytorch-grad-cam"`` (this class's default, so that code written for
    pytorch-grad-cam gets its maps) reproduces pytorch-grad-cam 1.5's weights:
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
    uses_gradients = False
    passes_per_mask = 1

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        variant: Literal["reference", "pytorch-grad-cam"] = "pytorch-grad-cam",
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

    @property
    def batch_size(self) -> int | None:
        """pytorch-grad-cam's name for ``chunk_size`` (masked images per pass)."""
        return self.chunk_size

    @batch_size.setter
    def batch_size(self, value: int | None) -> None:
        self.chunk_size = value

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

    def _mask_scores(self, ctx: CAMContext, image: int, masks: torch.Tensor) -> torch.Tensor:
        """(k,) scores of image ``image`` under each of the (k, 1, H, W) masks."""
        return self._score(ctx, ctx.inputs[image : image + 1] * masks, image)

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
            distinct_scores[start : start + len(ks)] = self._mask_scores(ctx, i, masks)
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
        example = inputs[:1].expand(min(chunk, max(expected, 1)), -1, -1, -1)
        self.engine.prepare(example, expected * self.passes_per_mask)
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


SCORE_OPTIONS = (PRECISION, MAX_CHANNELS, BACKEND)


class _SmoothedScoreCAM(ScoreCAM):
    """ScoreCAM (reference variant) whose mask scores a subclass smooths over samples."""

    default_samples = 1

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        num_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, variant="reference", **kwargs)
        self.num_samples = self.default_samples if num_samples is None else num_samples
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        self.passes_per_mask = self.num_samples


@register(
    "sscam",
    label="SS-CAM",
    family="perturbation",
    paper="Wang et al., 2020, https://arxiv.org/abs/2006.14255",
    cost="C x S forward passes of the whole model (S = --sscam-samples, default 35)",
    options=(
        OptionSpec(
            "num_samples", "--sscam-samples", int, 35,
            "SS-CAM: noisy copies of each mask (cost: one forward pass each).", minimum=1,
        ),
        OptionSpec(
            "std", "--sscam-std", float, 2.0,
            "SS-CAM: standard deviation of the noise added to each mask.", minimum=0,
        ),
        SEED,
        *SCORE_OPTIONS,
    ),
    sanity_options={"max_channels": 64, "num_samples": 4},
    aliases=("ss-cam",),
)  # fmt: skip
class SSCAM(_SmoothedScoreCAM):
    r"""SS-CAM (Wang et al., 2020, https://arxiv.org/abs/2006.14255), as torch-cam computes it.

    ScoreCAM whose mask scores are averaged over S noisy masks:

    .. math::
        s_k = \frac1S \sum_{s=1}^{S} \mathrm{softmax}\big(f(x \odot (M_k + \epsilon_s))\big)_c,
        \quad \epsilon_s \sim \mathcal N(0, \sigma^2) \text{ of the input's shape}, \qquad
        L = \mathrm{ReLU}\Big(\sum_k s_k A_k\Big)

    with ScoreCAM's reference masks :math:`M_k` (bilinear upsampling, then min-max; torch-cam
    min-maxes before upsampling). As torch-cam, one noise draw per sample is shared by all
    masks; camscope seeds it (``seed``), so maps are deterministic and a batch gives the maps
    of its images explained one at a time. Defaults S = 35, sigma = 2 (torch-cam's).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> SSCAM(model, "layer4[-1]", max_channels=4, num_samples=2)(
        ...     torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    default_samples = 35

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        std: float = 2.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.std, self.seed = std, seed

    def _mask_scores(self, ctx: CAMContext, image: int, masks: torch.Tensor) -> torch.Tensor:
        x = ctx.inputs[image : image + 1]
        noise = seeded_normal((self.num_samples, *x.shape), self.seed, masks) * self.std
        total = torch.zeros(len(masks), device=masks.device)
        for s in range(self.num_samples):
            total += self._score(ctx, x * (masks + noise[s]), image)
        return total / self.num_samples


@register(
    "iscam",
    label="IS-CAM",
    family="perturbation",
    paper="Naidu et al., 2020, https://arxiv.org/abs/2010.03023",
    cost="C x S forward passes of the whole model (S = --iscam-samples, default 10)",
    options=(
        OptionSpec(
            "num_samples", "--iscam-samples", int, 10,
            "IS-CAM: integration steps per mask (cost: one forward pass each).", minimum=1,
        ),
        *SCORE_OPTIONS,
    ),
    sanity_options={"max_channels": 64, "num_samples": 4},
    aliases=("is-cam",),
)  # fmt: skip
class ISCAM(_SmoothedScoreCAM):
    r"""IS-CAM (Naidu et al., 2020, https://arxiv.org/abs/2010.03023), as torch-cam computes it.

    ScoreCAM whose mask scores are summed along a path of growing masked inputs:

    .. math::
        F_i = \sum_{j=1}^{i} \frac{j}{S}\, x \odot M_k, \qquad
        s_k = \sum_{i=1}^{S} \mathrm{softmax}(f(F_i))_c, \qquad
        L = \mathrm{ReLU}\Big(\sum_k s_k A_k\Big)

    (torch-cam accumulates :math:`F_i` as written, so its last step is
    :math:`\frac{S+1}{2} x \odot M_k`; camscope does the same). Masks as ScoreCAM's reference
    variant. Default S = 10 (torch-cam's).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> ISCAM(model, "layer4[-1]", max_channels=4, num_samples=2)(
        ...     torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    default_samples = 10

    def _mask_scores(self, ctx: CAMContext, image: int, masks: torch.Tensor) -> torch.Tensor:
        masked = ctx.inputs[image : image + 1] * masks
        total = torch.zeros(len(masks), device=masks.device)
        scale = 0.0
        for i in range(1, self.num_samples + 1):
            scale += i / self.num_samples
            total += self._score(ctx, scale * masked, image)
        return total


RISE_BLOCK = 64  # masks drawn (and run) together; fixed, so the draws never depend on chunking


@register(
    "rise",
    label="RISE",
    family="perturbation",
    paper="Petsiuk et al., BMVC 2018, https://arxiv.org/abs/1806.07421",
    cost="N forward passes of the whole model (N = --rise-masks, default 4000); model-agnostic",
    options=(
        OptionSpec(
            "rise_masks", "--rise-masks", int, 4000,
            "RISE: random masks per image (cost: one forward pass each).", minimum=1,
        ),
        SEED,
        PRECISION,
        BACKEND,
    ),
    sanity_options={"rise_masks": 512},
)  # fmt: skip
class RISE(BaseCAM):
    r"""RISE (Petsiuk et al., BMVC 2018, https://arxiv.org/abs/1806.07421), model-agnostic.

    N random masks :math:`M_i`: a ``cells`` x ``cells`` grid of cells kept with probability
    p, upsampled bilinearly to ``(cells + 1)`` cell sizes and cropped at a random shift of up to
    one cell; then

    .. math::
        S^c = \frac{1}{N p} \sum_{i=1}^{N} \mathrm{softmax}\big(f(x \odot M_i)\big)_c \, M_i

    at the input's resolution (a callable target reads the softmax). The target layers are
    ignored (the map does not look inside the model). The masks are drawn from ``seed`` in
    fixed blocks, so maps are deterministic and the same for every image of a batch; the masked
    passes run through the same `camscope.engine.InferenceEngine` as ScoreCAM's.
    Defaults: N = 4000, cells = 7, p = 0.5 (the paper's for ResNet-50).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> RISE(model, rise_masks=64)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    needs_layer = False

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        rise_masks: int = 4000,
        cells: int = 7,
        p: float = 0.5,
        seed: int = 0,
        precision: Precision = "fp32",
        backend: Backend = "auto",
        jit: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, None, reshape_transform, **kwargs)
        if rise_masks < 1 or cells < 1 or not 0 < p <= 1:
            raise ValueError("RISE needs rise_masks >= 1, cells >= 1 and 0 < p <= 1")
        if target_layers is not None:
            self.notes.append("RISE is model-agnostic; the target layer is ignored")
        self.rise_masks, self.cells, self.p, self.seed = rise_masks, cells, p, seed
        self.engine = InferenceEngine(
            _Adapted(model, self.adapt), precision=precision, jit=jit, backend=backend
        )

    def close(self) -> None:
        """Release the inference engine's compiled copy."""
        super().close()
        self.engine.release()

    def masks(self, block: int, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """Masks ``block * RISE_BLOCK ...`` (at most RISE_BLOCK of them), (k, 1, H, W)."""
        count = min(RISE_BLOCK, self.rise_masks - block * RISE_BLOCK)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
        grid = torch.rand((count, 1, self.cells, self.cells), generator=generator) < self.p
        cell_h, cell_w = -(-size[0] // self.cells), -(-size[1] // self.cells)
        shift_y = torch.randint(0, cell_h, (count,), generator=generator).tolist()
        shift_x = torch.randint(0, cell_w, (count,), generator=generator).tolist()
        big = (self.cells + 1) * cell_h, (self.cells + 1) * cell_w
        up = F.interpolate(grid.to(like), size=big, mode="bilinear", align_corners=False)
        crops = [
            up[i, :, y : y + size[0], x : x + size[1]]
            for i, (y, x) in enumerate(zip(shift_y, shift_x, strict=True))
        ]
        return torch.stack(crops)

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        x = ctx.inputs
        size = (x.shape[-2], x.shape[-1])
        n = len(x)
        self.engine.prepare(x[:1].expand(min(RISE_BLOCK, self.rise_masks), -1, -1, -1),
                            n * self.rise_masks)  # fmt: skip
        saliency = torch.zeros(n, *size, dtype=torch.float64, device=x.device)
        with torch.no_grad():
            for block in range(-(-self.rise_masks // RISE_BLOCK)):
                masks = self.masks(block, size, x)
                for i in range(n):
                    probs = self.engine(x[i : i + 1] * masks).softmax(dim=1)
                    scores = ctx.targets.rows(probs, i).double()
                    saliency[i] += torch.einsum("k,khw->hw", scores, masks[:, 0].double())
        if self.engine.note and self.engine.note not in self.notes:
            self.notes.append(self.engine.note)
        ctx.info["masked_passes"] = float(n * self.rise_masks)
        return saliency / (self.rise_masks * self.p), torch.zeros(n, 0, device=x.device)


@register(
    "random",
    label="Random",
    family="baseline",
    paper="baseline: pytorch-grad-cam's RandomCAM, https://github.com/jacobgil/pytorch-grad-cam",
    cost="1 forward pass (no gradients)",
    options=(SEED,),
    aliases=("randomcam",),
)
class RandomCAM(BaseCAM):
    r"""A baseline: random channel weights, :math:`w_k \sim U(-1, 1)`.

    :math:`L = \mathrm{ReLU}(\sum_k w_k A_k)`, as pytorch-grad-cam's ``RandomCAM``
    (https://github.com/jacobgil/pytorch-grad-cam).

    The floor every method must beat in the faithfulness metrics. Seeded (``seed``): the same
    weights for every image and call, so maps are deterministic and batch-independent (the map
    still follows the image's activations, as pytorch-grad-cam's does; it ignores the target).

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> RandomCAM(model, "layer4[-1]", seed=1)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        reshape_transform: Any = None,
        *,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, **kwargs)
        self.seed = seed

    def weights(self, ctx: CAMContext) -> torch.Tensor:  # noqa: D102
        acts = ctx.activations
        assert acts is not None
        generator = torch.Generator().manual_seed(self.seed)
        w = torch.rand(acts.shape[1], generator=generator, dtype=torch.float64) * 2 - 1
        return w.to(acts)[None].expand(acts.shape[0], -1)
