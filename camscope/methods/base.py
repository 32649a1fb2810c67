"""`BaseCAM`: everything a CAM method shares, so that a method is only its weights.

The base takes the target layer's output, reads it as a map ``A`` (N, C, h, w) through
`camscope.layers.spatial_view` (the layer's layout, channels-first, channels-last or ViT tokens, as
`camscope.layers.check_layer` finds it once per input size; or a ``reshape_transform``),
resolves the targets, asks the method for weights ``w`` and forms

    L = ReLU(sum_k w_k * A_k)          w: (N, C) per channel, or (N, C, h, w) element-wise

(with ``eigen_smooth``: L = ReLU(first principal component of the (N, C, h, w) products), as
pytorch-grad-cam). ``L`` is upsampled bilinearly (half-pixel centres) to the input size and
min-max normalised to [0, 1]; a map with no spatial variation stays all zero, is never NaN, and
is flagged ``empty``. Several layers: each layer's map is min-max normalised at its own
resolution and resized, the maps are averaged and normalised again (as pytorch-grad-cam).
``aug_smooth`` averages the maps of the image flipped horizontally or not, times 0.9, 1 and 1.1
(pytorch-grad-cam's test-time augmentation).

The layers before the target layer run once, without autograd; what the methods re-evaluate
(gradients, ablations) runs through the network *after* the layer only (`camscope.layers.split`).
A method that reads the gradient at the layer (``layer_gradients``) gets it from the same
evaluation that gave the activations and the scores (`FeatureRunner.run` with ``grad``: where
torch.fx cannot split the model, ONE whole-network pass whose hook puts a leaf in place of the
layer's output) and one backward from the target scores to that leaf.
Hooks never outlive a call. Everything stays a torch tensor on the input's device.

Example::

    >>> import torch, torchvision
    >>> from camscope.methods import GradCAM, ClassifierOutputTarget
    >>> model = torchvision.models.resnet18().eval()
    >>> cam = GradCAM(model, target_layers=[model.layer4[-1]])
    >>> cam(input_tensor=torch.randn(1, 3, 64, 64), targets=[ClassifierOutputTarget(281)]).shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from camscope.layers import (
    FeatureRunner,
    HookRunner,
    LayerError,
    LayerRun,
    LayoutError,
    MapLayout,
    SplitError,
    default_layer,
    detect_layout,
    resolve_layer,
    spatial_view,
)
from camscope.layers.cache import cached_layout, cached_split
from camscope.methods.targets import (
    ClassifierOutputTarget,
    Targets,
    TargetSet,
    output_adapter,
    resolve_targets,
)

__all__ = [
    "EIGEN_SIGNS",
    "BaseCAM",
    "CAMContext",
    "CAMResult",
    "NoGradientError",
    "eval_mode",
    "first_component",
    "normalise_maps",
]

log = logging.getLogger("camscope")

Layers = str | nn.Module | Sequence[str | nn.Module] | None

CPU_CHUNK_BYTES = 1 << 30
AUGMENTATIONS = ((False, 0.9), (False, 1.0), (False, 1.1), (True, 0.9), (True, 1.0), (True, 1.1))
#: How `first_component` orients a principal component: pytorch-grad-cam's (the sign the SVD
#: solver returns, float32 NumPy/LAPACK as its ``get_2d_projection``) or camscope's (positive
#: correlation with the channel mean).
EIGEN_SIGNS = ("pytorch-grad-cam", "mean")


class NoGradientError(LayerError):
    """The target does not depend on the layer: its gradient there is exactly zero (one line)."""


@dataclass
class CAMResult:
    """The output of `BaseCAM.explain` for a batch of N images.

    Attributes:
        maps: (N, H, W) float32 in [0, 1] at the input size.
        raw: (N, h, w) float32, the first layer's ``ReLU(sum_k w_k A_k)`` at its resolution.
        weights: (N, C) or (N, C, h, w) float32 weights of the first layer.
        targets: (N,) int64 target classes (-1 for a callable target without ``category``).
        logits: (N, ...) float32 model outputs of the unmodified inputs.
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
    maps, flat = _minmax(up)
    return torch.where(empty[:, None, None], 0.0, maps), empty | flat


def _minmax(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map min-max to [0, 1] of (N, H, W); flat maps -> 0 and flagged."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - low
    keep = span > 0
    out = torch.where(keep, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)
    return out, ~keep.flatten()


def first_component(x: torch.Tensor, sign: str = "mean") -> torch.Tensor:
    """(N, C, h, w) -> (N, h, w): projection on the first principal component over channels.

    As pytorch-grad-cam's ``get_2d_projection``: the h*w positions are samples of C features,
    centred, and projected on the first right singular vector. A singular vector's sign is
    arbitrary. ``sign="mean"`` (camscope's choice) orients the projection so that it correlates
    positively (Pearson) with the channel mean of ``x``, in float64.
    ``sign="pytorch-grad-cam"`` keeps the sign the solver returns, computed exactly as
    pytorch-grad-cam does (float32, NumPy's LAPACK SVD with full matrices), so the map is
    pytorch-grad-cam's (computed on the CPU, returned on ``x``'s device, float32).

    Args:
        x: (N, C, h, w) tensor; NaN counts as 0.
        sign: one of `EIGEN_SIGNS`.
    """
    if sign not in EIGEN_SIGNS:
        raise ValueError(f"unknown eigen sign '{sign}' ({', '.join(EIGEN_SIGNS)})")
    if sign == "pytorch-grad-cam":
        return _solver_component(x)
    flat = torch.nan_to_num(x.double()).flatten(2).transpose(1, 2)  # (N, hw, C)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    projection = (flat @ vh[:, 0, :, None])[..., 0]  # (N, hw)
    reference = x.double().mean(dim=1).flatten(1)
    reference = reference - reference.mean(dim=1, keepdim=True)
    sign_ = torch.where((projection * reference).sum(dim=1) < 0, -1.0, 1.0).to(projection)
    return (projection * sign_[:, None]).reshape(x.shape[0], *x.shape[2:])


def _solver_component(x: torch.Tensor) -> torch.Tensor:
    """`first_component` with the solver's sign, computed as pytorch-grad-cam computes it."""
    import numpy as np

    batch = np.nan_to_num(x.detach().float().cpu().numpy(), nan=0.0)
    out = np.empty((batch.shape[0], *batch.shape[2:]), dtype=np.float32)
    for n, activations in enumerate(batch):
        flat = activations.reshape(activations.shape[0], -1).T
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=True)
        out[n] = (flat @ vt[0, :]).reshape(activations.shape[1:])
    return torch.from_numpy(out).to(x.device)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with every module of ``model`` in eval mode, then restore each one's mode.

    A CAM explains the model as it predicts: BatchNorm reads its running statistics (never
    updates them) and dropout is off, whatever mode the caller left the model in (as
    pytorch-grad-cam, which calls ``model.eval()``); unlike pytorch-grad-cam, the caller's mode
    (module by module) is restored afterwards, also when the block raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    if not any(training for _, training in modes):
        yield
        return
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def default_chunk(device: torch.device, bytes_per_item: int) -> int:
    """How many items (masked images, ablated activations) to push through at once.

    On CUDA the chunk takes 40% of the currently free device memory; on the CPU it takes
    `CPU_CHUNK_BYTES` (1 GiB), where throughput has long saturated.
    """
    budget = CPU_CHUNK_BYTES
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget = int(0.4 * free)
    return max(1, budget // max(bytes_per_item, 1))


@dataclass
class CAMContext:
    """What a method's `BaseCAM.weights` sees for one layer and one batch.

    Attributes:
        inputs: (N, 3, H, W) the (detached) inputs.
        layer: canonical name of the layer (None for model-agnostic methods).
        output: the layer's output in its own layout (detached).
        activations: ``output`` as a map (N, C, h, w).
        cache: what the network after the layer reads besides the layer's output.
        logits: (N, ...) model outputs of the inputs (float32, through the output adapter).
        targets: the resolved targets.
        runner: re-runs the network after the layer (`camscope.layers.split`).
        view: the layer's `MapLayout`.
        info: counters the method may add to (reported in `CAMResult.info`).
        grads: the gradient at the layer as a map, once `BaseCAM.gradients` computed it.
        graph: (model output, leaf) of the evaluation that gave ``output`` when the method
            reads gradients: its graph runs from the leaf (the layer's output) to the model
            output; `BaseCAM.target_score` uses it once, then drops it.
    """

    inputs: torch.Tensor
    layer: str | None
    output: torch.Tensor | None
    activations: torch.Tensor | None
    cache: tuple[torch.Tensor, ...]
    logits: torch.Tensor
    targets: TargetSet
    runner: FeatureRunner | None
    view: MapLayout | None
    info: dict[str, float] = field(default_factory=dict)
    grads: torch.Tensor | None = None
    graph: tuple[Any, torch.Tensor] | None = None


class BaseCAM:
    """Shared machinery: layers, split runner, views, targets, combination, smoothing, cleanup.

    Subclasses implement `weights` (and, for methods that are not a weighted sum of a layer's
    channels, `layer_map`). A subclass written for pytorch-grad-cam's ``BaseCAM`` may implement
    ``get_cam_weights(input_tensor, target_layer, targets, activations, grads)`` instead
    (NumPy activations and gradients in, (N, C) weights out).

    The model is explained in eval mode (BatchNorm reads its running statistics, never updates
    them; dropout off) and each module's train/eval mode is restored after every call
    (`eval_mode`); pytorch-grad-cam calls ``model.eval()`` once and leaves it so.

    Args:
        model: a classifier mapping (N, 3, H, W) to its outputs.
        target_layers: a layer path (``"layer4[-1]"``), a module, or a list of them; None:
            the model's default layer (`camscope.layers.default_layer`; Hugging Face models
            by `camscope.adapters.hf.hf_default_layer`).
        reshape_transform: callable from the layer's output to (N, C, h, w) (pytorch-grad-cam's
            argument), for layers whose output is not a channels-first map.
        compute_input_gradient: pytorch-grad-cam's argument, kept as an attribute (None: the
            method's own value); camscope computes the gradients a method needs by itself.
        uses_gradients: likewise (None: the method's own value).
        tta_transforms: a ``ttach.Compose`` for ``aug_smooth`` (None: flips x {0.9, 1, 1.1}).
        detach: pytorch-grad-cam's argument, kept as an attribute.
        output: which part of the model's output the targets read (`output_adapter`).
        eigen_sign: how ``eigen_smooth`` (and the eigen methods) orient the principal
            component: ``"pytorch-grad-cam"`` (default, its solver's sign) or ``"mean"``
            (camscope's, the registry's choice), see `first_component`.
        refuse_no_gradient: when the target's gradient at the layer is exactly zero for every
            image (the target does not depend on it: a ViT's last block), raise
            `NoGradientError` instead of returning empty maps. Default False, as
            pytorch-grad-cam: the maps are all zero, flagged ``empty`` in `CAMResult`, and one
            warning says why. ``camscope run`` refuses such a layer before the first image.

    Attributes:
        outputs: the model outputs of the last call's unmodified inputs (pytorch-grad-cam's
            ``cam.outputs``), through the output adapter.
        batch_size: pytorch-grad-cam's attribute; the perturbation methods read it.
    """

    name = "base"
    uses_split = True  # re-runs the network after the layer (gradients, ablations)
    needs_layer = True
    always_eigen = False  # the map is always the first principal component (EigenCAM)
    uses_gradients = True  # pytorch-grad-cam's attribute: the method reads gradients
    layer_gradients = False  # calls `gradients`: the forward pass keeps the graph after the layer
    compute_input_gradient = False  # pytorch-grad-cam's attribute (FullGrad: True)

    def __init__(
        self,
        model: nn.Module,
        target_layers: Layers = None,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        compute_input_gradient: bool | None = None,
        uses_gradients: bool | None = None,
        tta_transforms: Any = None,
        detach: bool = True,
        *,
        output: str | int | Callable[[Any], torch.Tensor] | None = None,
        eigen_sign: str = "pytorch-grad-cam",
        refuse_no_gradient: bool = False,
    ) -> None:
        self._runners: list[FeatureRunner | None] = []  # first: __del__ must find it
        self.model = model
        self.layers: list[str] = []
        self.modules: list[nn.Module] = []
        if target_layers is None and self.needs_layer:
            target_layers = _default_target(model, type(self).__name__)
        for spec in _as_list(target_layers):
            name, module = resolve_layer(model, spec)
            self.layers.append(name)
            self.modules.append(module)
        if self.needs_layer and not self.layers:
            raise LayerError(f"{type(self).__name__} needs at least one target layer")
        if eigen_sign not in EIGEN_SIGNS:
            raise ValueError(f"unknown eigen_sign '{eigen_sign}' ({', '.join(EIGEN_SIGNS)})")
        self.layer = self.layers[0] if self.layers else None
        self.module = self.modules[0] if self.modules else None
        self.target_layers = list(self.modules)
        self.reshape_transform = reshape_transform
        self.adapt = output_adapter(output)
        self.eigen_sign = eigen_sign
        self.refuse_no_gradient = refuse_no_gradient
        if compute_input_gradient is not None:
            self.compute_input_gradient = bool(compute_input_gradient)
        if uses_gradients is not None:
            self.uses_gradients = bool(uses_gradients)
        self.tta_transforms = tta_transforms
        self.detach = detach
        self.outputs: torch.Tensor | None = None
        self._runners = [None] * len(self.layers)
        self._layouts: dict[tuple[int, tuple[int, int]], Any] = {}
        self.notes: list[str] = []

    # -- context manager / cleanup -----------------------------------------------------------
    def __enter__(self) -> BaseCAM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        """Release what `close` releases; never raises (also after a failed ``__init__``)."""
        with suppress(Exception):  # a finaliser must not raise
            self.close()

    def close(self) -> None:
        """Release the split graphs. Hooks never outlive a call, so there is nothing else."""
        self._runners = [None] * len(self.layers)

    # -- runners -----------------------------------------------------------------------------
    @property
    def _runner(self) -> FeatureRunner | None:
        return self._runners[0] if self._runners else None

    @_runner.setter
    def _runner(self, runner: FeatureRunner | None) -> None:
        self._runners[0] = runner

    @property
    def runner(self) -> FeatureRunner:
        """The first layer's runner."""
        return self.runner_for(0)

    def runner_for(self, index: int) -> FeatureRunner:
        """The feature/classify runner of layer ``index``, built on first use."""
        runner = self._runners[index]
        if runner is None:
            layer, module = self.layers[index], self.modules[index]
            if self.uses_split:
                runner = cached_split(self.model, layer, module)
                if not runner.exact_split:
                    self.notes.append(runner.note)
            else:
                runner = HookRunner(self.model, layer, module, "not needed")
                runner.note = "hook on the target layer"
            self._runners[index] = runner
        return runner

    def _fallback(self, index: int, call: Callable[[FeatureRunner], Any]) -> Any:
        """``call(runner)``; where the split refuses the inputs, with a `HookRunner` (said)."""
        try:
            return call(self.runner_for(index))
        except SplitError as exc:
            runner = HookRunner(self.model, self.layers[index], self.modules[index], str(exc))
            self._runners[index] = runner
            log.warning("%s", runner.note)  # as camscope.layers.split
            self.notes.append(runner.note)
            return call(runner)

    def _features(self, index: int, inputs: torch.Tensor):
        return self._fallback(index, lambda runner: runner.features(inputs))

    def _run(self, index: int, inputs: torch.Tensor, grad: bool) -> LayerRun:
        return self._fallback(index, lambda runner: runner.run(inputs, grad=grad))

    def _keeps_graph(self) -> bool:
        """Whether `context` keeps the graph after the layer for `gradients` (one pass less)."""
        own = getattr(self, "get_cam_weights", None) is not None and self.uses_gradients
        return bool(self.layer_gradients or own)

    # -- public API --------------------------------------------------------------------------
    def __call__(
        self,
        input_tensor: torch.Tensor,
        targets: Targets = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> torch.Tensor:
        """Maps (N, H, W) in [0, 1] for a batch of normalised images (N, 3, H, W)."""
        return self.explain(input_tensor, targets, aug_smooth, eigen_smooth).maps

    def explain(
        self,
        input_tensor: torch.Tensor,
        targets: Targets = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> CAMResult:
        """Compute the maps and everything behind them for a batch.

        Args:
            input_tensor: (N, 3, H, W) float tensor, normalised as the model expects.
            targets: None (each image's top-1 class), a class index for all images, one index
                per image (sequence or (N,) tensor), or callables ``target(output_row) ->
                scalar`` (one per image, or one for all); a length mismatch is an error.
            aug_smooth: average over horizontal flips x {0.9, 1, 1.1} scalings of the input
                (targets are resolved on the unmodified input and kept for every copy;
                pytorch-grad-cam re-picks the top-1 class of each copy when targets is None).
            eigen_smooth: the map is the first principal component of the weighted
                activations instead of their sum (pytorch-grad-cam's meaning).
        """
        inputs = _checked_inputs(input_tensor)
        with eval_mode(self.model):
            result = self._explain(inputs, targets, aug_smooth, eigen_smooth)
        self.outputs = result.logits
        return result

    def _explain(
        self, inputs: torch.Tensor, targets: Targets, aug_smooth: bool, eigen_smooth: bool
    ) -> CAMResult:
        result, target_set = self._explain_once(inputs, targets, eigen_smooth)
        if not aug_smooth:
            return result
        if self.tta_transforms is not None:
            maps = self._tta_maps(inputs, target_set, eigen_smooth)
        else:
            total = torch.zeros_like(result.maps)
            for flip, factor in AUGMENTATIONS:
                if not flip and factor == 1.0:
                    total += result.maps
                    continue
                x = (inputs.flip(-1) if flip else inputs) * factor
                maps = self._explain_once(x, target_set, eigen_smooth)[0].maps
                total += maps.flip(-1) if flip else maps
            maps = total / len(AUGMENTATIONS)
        flat = maps.flatten(1)
        result.empty = flat.amax(dim=1) <= flat.amin(dim=1)
        result.maps = torch.where(result.empty[:, None, None], 0.0, maps)
        result.info["augmentations"] = float(len(AUGMENTATIONS))
        return result

    def _tta_maps(self, inputs: torch.Tensor, targets: TargetSet, eigen: bool) -> torch.Tensor:
        """The mean map over a user's ``ttach`` transforms (pytorch-grad-cam's tta_transforms)."""
        maps = []
        for transform in self.tta_transforms:
            x = transform.augment_image(inputs)
            one = self._explain_once(x, targets, eigen)[0].maps[:, None]
            maps.append(transform.deaugment_mask(one)[:, 0])
        return torch.stack(maps).mean(dim=0)

    def _explain_once(
        self, inputs: torch.Tensor, targets: Targets | TargetSet, eigen_smooth: bool
    ) -> tuple[CAMResult, TargetSet]:
        size = tuple(inputs.shape[-2:])
        per_layer = []
        for index in range(max(1, len(self.layers))):
            ctx = self.context(inputs, index if self.layers else None, targets)
            targets = ctx.targets
            raw, weights = self.layer_map(ctx, eigen_smooth or self.always_eigen)
            per_layer.append((raw.float(), weights, ctx))
        raw, weights, ctx = per_layer[0]
        maps, empty = normalise_maps(raw, size)  # type: ignore[arg-type]
        if len(per_layer) > 1:  # as pytorch-grad-cam: min-max at each layer's size, resize
            scaled = [_minmax(r)[0][:, None] for r, _, _ in per_layer]
            up = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in scaled]
            maps, empty = _minmax(torch.cat(up, dim=1).mean(dim=1))
        info = {k: v for _, _, c in per_layer for k, v in c.info.items()}
        result = CAMResult(maps, raw, weights.float(), ctx.targets.indices, ctx.logits, empty, info)
        return result, ctx.targets

    # -- the pieces a method uses --------------------------------------------------------------
    def context(
        self, inputs: torch.Tensor, index: int | None, targets: Targets | TargetSet
    ) -> CAMContext:
        """Run the network once on ``inputs`` for layer ``index`` (None: no layer)."""
        if index is None:
            with torch.no_grad():
                logits = self.adapt(self.model(inputs)).float()
            target_set = resolve_targets(targets, logits)
            return CAMContext(inputs, None, None, None, (), logits, target_set, None, None)
        grad = self._keeps_graph()
        output, cache, model_output, leaf = self._run(index, inputs, grad)
        with torch.no_grad():
            view = self._view(index, output, inputs)
            activations = view.to_map(output)
            logits = self.adapt(model_output).detach().float()
        target_set = resolve_targets(targets, logits)
        runner = self.runner_for(index)
        layer = self.layers[index]
        graph = (model_output, leaf) if leaf is not None else None
        return CAMContext(
            inputs, layer, output, activations, cache, logits, target_set, runner, view,
            graph=graph,
        )  # fmt: skip

    def _view(self, index: int, output: torch.Tensor, inputs: torch.Tensor) -> MapLayout:
        """How layer ``index``'s output reads as (N, C, h, w) (`camscope.layers.spatial_view`)."""
        if self.reshape_transform is not None:
            try:
                return spatial_view(output, self.reshape_transform)
            except LayerError as exc:
                raise LayerError(f"layer {self.layers[index]}: {exc}") from None
        size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
        key = (index, size)
        if key not in self._layouts:
            self._layouts[key] = self._layout(index, output, size, int(inputs.shape[1]))
        return spatial_view(output, layout=self._layouts[key])

    def _layout(
        self, index: int, output: torch.Tensor, size: tuple[int, int], channels: int
    ) -> Any:
        """`check_layer`'s layout (one dry pass per model, layer and input size; cached)."""
        try:
            return cached_layout(self.model, self.layers[index], size, channels)
        except LayerError:
            raise
        except Exception as exc:  # noqa: BLE001 - the dry pass itself failed (odd inputs)
            try:
                return detect_layout(tuple(output.shape), size, self.model, batch=len(output))
            except LayoutError as why:
                shape = tuple(output.shape)
                raise LayerError(f"layer {self.layers[index]} outputs {shape}: {why}") from exc

    def gradients(self, ctx: CAMContext) -> torch.Tensor:
        """d(sum of the target scores)/dA as a map (N, C, h, w): the one gradient helper.

        Backward runs through the network after the layer only; computed once per context.
        """
        if ctx.grads is None:
            assert ctx.view is not None
            with torch.enable_grad():
                score, leaf = self.target_score(ctx)
                (grads,) = torch.autograd.grad(score, leaf, allow_unused=True)
            grads = torch.zeros_like(leaf) if grads is None else grads
            if not bool(ctx.view.to_map(grads).any()):  # the map's positions, not CLS tokens
                why = (
                    f"layer {ctx.layer}: the target's gradient there is exactly zero for every "
                    f"image, so {type(self).__name__} draws an empty map; the target does "
                    "not depend on this layer's output (a ViT's last block: its patch tokens "
                    "never reach the class token) - choose an earlier layer"
                )
                if self.refuse_no_gradient:
                    raise NoGradientError(why)
                log.warning(why)
            ctx.grads = ctx.view.to_map(grads)
        return ctx.grads

    def target_score(self, ctx: CAMContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the target scores, the leaf at the layer) with the graph between them.

        The graph of the context's own evaluation when it kept one (used once); else the
        network after the layer runs again on a leaf. Call with autograd enabled.
        """
        if ctx.graph is not None:
            model_output, leaf = ctx.graph
            ctx.graph = None  # a backward frees it
        else:
            assert ctx.output is not None and ctx.runner is not None
            leaf = ctx.output.detach().requires_grad_(True)
            model_output = ctx.runner.classify(leaf, ctx.cache)
        return ctx.targets.scores(self.adapt(model_output)).sum(), leaf

    def classify_maps(self, ctx: CAMContext, maps: torch.Tensor, image: int) -> torch.Tensor:
        """Target scores (B,) of image ``image`` with its map replaced by each of ``maps``."""
        assert ctx.output is not None and ctx.runner is not None and ctx.view is not None
        layer_out = ctx.view.from_map(maps, ctx.output[image : image + 1])
        out = ctx.runner.classify(layer_out, ctx.runner.expand_cache(ctx.cache, image, len(maps)))
        return ctx.targets.rows(self.adapt(out), image).float()

    def layer_map(self, ctx: CAMContext, eigen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw map (N, h, w) of one layer and the weights behind it."""
        weights = self.weights(ctx)
        acts = ctx.activations
        assert acts is not None
        with torch.no_grad():
            if eigen:
                w = weights[:, :, None, None] if weights.dim() == 2 else weights
                if self.eigen_sign == "mean":
                    raw = first_component(w.double() * acts.double())
                else:  # as pytorch-grad-cam: float32 weighted activations, solver's sign
                    raw = first_component(w.float() * acts.float(), self.eigen_sign).to(acts)
            elif weights.dim() == 2:
                # float64 sum: the weighted channels often cancel, float32 rounding would show
                raw = torch.einsum("nc,nchw->nhw", weights.double(), acts.double())
            else:
                raw = (weights.double() * acts.double()).sum(dim=1)
        return F.relu(raw), weights

    def weights(self, ctx: CAMContext) -> torch.Tensor:
        """Weights (N, C) per channel or (N, C, h, w) per element, for ``ctx.activations``.

        The base calls a pytorch-grad-cam-style ``get_cam_weights`` if the subclass has one.
        """
        get_cam_weights = getattr(self, "get_cam_weights", None)
        if get_cam_weights is None:
            raise NotImplementedError(f"{type(self).__name__} must implement weights(ctx)")
        assert ctx.activations is not None and ctx.layer is not None
        grads = self.gradients(ctx).cpu().numpy() if self.uses_gradients else None
        targets = ctx.targets.functions or [
            ClassifierOutputTarget(int(i)) for i in ctx.targets.indices
        ]
        module = self.modules[self.layers.index(ctx.layer)]
        acts = ctx.activations.cpu().numpy()
        weights = get_cam_weights(ctx.inputs, module, list(targets), acts, grads)
        return torch.as_tensor(weights).to(ctx.activations)


def _default_target(model: nn.Module, method: str) -> str:
    """``target_layers=None``: the model's default layer (`camscope.layers.default_layer`)."""
    from camscope.adapters.hf import hf_input_size, is_hf_model

    size = hf_input_size(model) if is_hf_model(model) else (224, 224)
    layer = default_layer(model, size)
    log.info("%s: no target_layers given; using the default layer %s", method, layer)
    return layer


def _as_list(layers: Layers) -> list[str | nn.Module]:
    if layers is None:
        return []
    if isinstance(layers, (str, nn.Module)):
        return [layers]
    return list(layers)


def _checked_inputs(inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError(f"inputs must be a (N, C, H, W) tensor, got {_describe(inputs)}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {inputs.dtype}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("CAMs cannot be computed inside torch.inference_mode()")
    # An inference tensor (made under torch.inference_mode) cannot be saved for backward,
    # which gradients through the hook fallback need: use a normal copy.
    return inputs.detach().clone() if inputs.is_inference() else inputs.detach()


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__
