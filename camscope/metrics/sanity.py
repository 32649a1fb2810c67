"""Cascading model-parameter randomisation sanity check.

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
https://arxiv.org/abs/1810.03292.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from camscope.metrics.agreement import spearman
from camscope.metrics.stats import bootstrap_interval

ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer.

    True for torch's norms (and subclasses such as timm's BatchNormAct2d) and for a leaf whose
    class name ends like one (``LayerNorm2d``, ``RmsNorm``, ``FrozenBatchNorm2d``).
    """
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    if isinstance(module, norms):
        return True
    leaf = not any(_has_params(c) for c in module.children())
    return leaf and re.search(r"Norm(Act)?(\d+d)?$", type(module).__name__) is not None


def randomization_blocks(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """The model's parameterised blocks, output side first: the default sanity-check cascade.

    Rule (generic, no per-architecture table):

    1. Skip wrappers: while the root has exactly one child with parameters and no parameters of
       its own, descend into it.
    2. Take the root's children that have parameters and run during a forward pass of
       ``example_input`` (default zeros (1, 3, 224, 224)); their forward order is the order of
       the first call of any module inside them (forward pre-hooks), so ModuleLists count too.
    3. The last of them is the classifier head and stays one block. The last *container*
       (Sequential/ModuleList/ModuleDict) before it - the one whose output feeds the head -
       is expanded into its parameterised children; earlier containers stay whole.
    4. A normalisation layer (other than the head) is merged into the block before it
       ("conv1+bn1").
    5. Reverse, so the output side comes first.

    torchvision ResNet-50 -> ``fc, layer4.2, layer4.1, layer4.0, layer3, layer2, layer1,
    conv1+bn1``; timm EfficientNet -> ``classifier, conv_head+bn2, blocks.6, ..., blocks.0,
    conv_stem+bn1``. Names are dotted paths from ``model``; a block of several modules joins
    them with ``+``. Parameters held by the root itself (e.g. a ViT's ``pos_embed``) belong to
    no block and are never randomised.
    """
    prefix, root = "", model
    while True:
        kids = [(n, m) for n, m in root.named_children() if _has_params(m)]
        if len(kids) != 1 or next(root.parameters(recurse=False), None) is not None:
            break
        if not any(True for _ in kids[0][1].children()):
            break
        prefix, root = f"{prefix}{kids[0][0]}.", kids[0][1]

    first_call: dict[nn.Module, int] = {}

    def hook(module: nn.Module, _args: object) -> None:
        first_call.setdefault(module, len(first_call))

    handles = [module.register_forward_pre_hook(hook) for module in root.modules()]
    try:
        param = next(model.parameters())
        if example_input is None:
            example_input = torch.zeros(1, 3, 224, 224)
        with torch.no_grad():
            model(example_input.to(device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()

    def order(module: nn.Module) -> int | None:
        calls = [first_call[m] for m in module.modules() if m in first_call]
        return min(calls) if calls else None

    def ordered(parent: nn.Module, base: str) -> list[tuple[str, nn.Module]]:
        found = [
            (order(m), f"{base}{n}", m)
            for n, m in parent.named_children()
            if _has_params(m) and order(m) is not None
        ]
        return [(name, m) for _, name, m in sorted(found, key=lambda t: t[0])]

    top = ordered(root, prefix)
    if not top:
        raise ValueError("the model has no parameterised submodule that runs in forward")
    containers = [i for i, (_, m) in enumerate(top[:-1]) if isinstance(m, _CONTAINERS)]
    if containers:
        i = containers[-1]
        name, module = top[i]
        top[i : i + 1] = ordered(module, f"{name}.")

    groups: list[list[str]] = []
    for k, (name, module) in enumerate(top):
        if groups and k < len(top) - 1 and _is_norm(module):
            groups[-1].append(name)
        else:
            groups.append([name])
    return ["+".join(g) for g in reversed(groups)]


def empty_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N,) bool: True where a map (N, H, W) has no spatial variation (max == min, e.g. all zero).

    Example:
        >>> empty_maps(torch.stack([torch.zeros(2, 2), torch.eye(2)])).tolist()
        [True, False]
    """
    flat = maps.reshape(len(maps), -1)
    return flat.amax(dim=1) <= flat.amin(dim=1)


@dataclass
class SanityStep:
    """One step of the cascade: ``block`` and everything above it are randomised.

    spearman (N,): signed Spearman rank correlation between the trained model's map and the
    randomised model's map, per image (0 where the randomised map is empty: no ranks to
    correlate). empty (N,) bool: the randomised model's map is empty (`empty_maps`); such an
    image is counted apart (``n_empty``), never as a low correlation. mean/min/max: over the
    images with a non-empty randomised map, signed; mean_abs/max_abs: of ``|spearman|`` there
    (NaN when every map is empty). n_reset / n_params: parameter tensors of this block
    re-initialised by a ``reset_parameters()`` / all parameter tensors of the block (the rest
    keep trained values).
    """

    block: str
    spearman: torch.Tensor
    mean: float
    min: float
    max: float
    mean_abs: float
    max_abs: float
    n_reset: int
    n_params: int
    empty: torch.Tensor | None = None

    @property
    def n_empty(self) -> int:
        """Images whose randomised map is empty."""
        return 0 if self.empty is None else int(self.empty.sum())

    @classmethod
    def from_values(
        cls,
        block: str,
        values: torch.Tensor,
        n_reset: int,
        n_params: int,
        empty: torch.Tensor | None = None,
    ) -> SanityStep:
        """Summarise per-image Spearman values (and empty flags) of one step."""
        v = values.detach().float().cpu()
        flags = torch.zeros(len(v), dtype=torch.bool) if empty is None else empty.cpu().bool()
        live = v[~flags]
        if live.numel():
            a = live.abs()
            stats = (live.mean(), live.min(), live.max(), a.mean(), a.max())
        else:
            stats = (math.nan,) * 5
        mean, lo, hi, mean_abs, max_abs = (float(x) for x in stats)
        return cls(block, v, mean, lo, hi, mean_abs, max_abs, n_reset, n_params, flags)


class SanityVerdict(NamedTuple):
    """Outcome of the randomisation check for one method.

    outcome: "pass", "fail" (maps stay rank-correlated), "undecided" (the 95 % bootstrap
    interval of the mean |Spearman| over images contains the threshold: too few images to
    tell) or "empty" (some randomised maps are empty, so a low correlation cannot be told from
    a vanished map: never a pass).
    mean_abs: mean |Spearman| over the non-empty randomised maps of the final step; low, high:
    its percentile-bootstrap interval over images (NaN for fewer than 2 maps).
    """

    outcome: str
    mean_abs: float
    n_empty: int
    n: int
    low: float = math.nan
    high: float = math.nan

    @property
    def passed(self) -> bool:
        """True only for the outcome "pass" (an empty randomised map is never a pass)."""
        return self.outcome == "pass"

    def describe(self) -> str:
        """E.g. "fail: 2 of 3 randomised maps empty", "undecided (4 images)" or "pass"."""
        text = self.outcome if self.outcome != "empty" else "fail"
        if self.n_empty:
            text += f": {self.n_empty} of {self.n} randomised maps empty"
        elif self.outcome == "undecided":
            text += f" ({self.n} images)"
        return text


def _vector(values: object, dtype: torch.dtype) -> torch.Tensor:
    """A flat CPU tensor copy of a tensor, array or sequence."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().to(dtype).reshape(-1)
    numpy_dtype = bool if dtype == torch.bool else np.float64
    return torch.from_numpy(np.array(values, dtype=numpy_dtype).reshape(-1))


def sanity_verdict(spearman: object, empty: object, threshold: float = 0.5) -> SanityVerdict:
    """The verdict from the final cascade step's per-image Spearman values and empty flags.

    Rule: any empty randomised map -> "empty" (reported as a failure with "k of n randomised
    maps empty"); else the mean |Spearman| over images and its 95 % percentile-bootstrap
    interval (`camscope.metrics.stats.bootstrap_interval`): "undecided" when the interval
    contains ``threshold`` (low < threshold <= high), else "pass" when the mean is below it,
    otherwise (or NaN) "fail". One image has no interval: its value decides.

    Example:
        >>> sanity_verdict([0.1, 0.0, 0.0], [False, True, True]).describe()
        'fail: 2 of 3 randomised maps empty'
        >>> sanity_verdict([0.2, 0.9, 0.3, 0.8], [False] * 4).describe()
        'undecided (4 images)'
    """
    rho, flags = _vector(spearman, torch.float64), _vector(empty, torch.bool)
    if rho.shape != flags.shape:
        raise ValueError(f"{rho.numel()} Spearman values but {flags.numel()} empty flags")
    if rho.numel() == 0:
        raise ValueError("no sanity values")
    live = rho[~flags].abs()
    mean_abs = float(live.mean()) if live.numel() else math.nan  # NaN if any value is NaN
    interval = bootstrap_interval(live.numpy(), bounds=(0.0, 1.0))
    low, high = interval.low, interval.high
    n_empty = int(flags.sum())
    if n_empty:
        outcome = "empty"
    elif not math.isfinite(mean_abs):
        outcome = "fail"
    elif math.isfinite(low) and low < threshold <= high:
        outcome = "undecided"
    else:
        outcome = "pass" if mean_abs < threshold else "fail"
    return SanityVerdict(outcome, mean_abs, n_empty, int(rho.numel()), low, high)


def _reinitialise(model: nn.Module, block: str) -> tuple[int, int]:
    """``reset_parameters()`` every module of ``block`` ('+'-joined dotted names).

    Conv/Linear get PyTorch's default random init; BatchNorm gets weight 1, bias 0 and fresh
    running statistics (mean 0, var 1, counter 0) - its ``reset_parameters`` resets those too.
    Returns (parameter tensors reset, parameter tensors in the block).
    """
    reset: set[int] = set()
    total: set[int] = set()
    for name in block.split("+"):
        for module in model.get_submodule(name).modules():
            total.update(id(p) for p in module.parameters(recurse=False))
            fn = getattr(module, "reset_parameters", None)
            if callable(fn):
                fn()
                reset.update(id(p) for p in module.parameters(recurse=False))
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                module.reset_running_stats()
    return len(reset), len(total)


def sanity_check(
    model: nn.Module,
    explain_fn: ExplainFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    blocks: Sequence[str] | None = None,
    seed: int = 0,
) -> list[SanityStep]:
    """Cascading model-parameter randomisation test (Adebayo et al., NeurIPS 2018).

    Deep-copies ``model`` (the original is never modified), computes the reference maps
    ``explain_fn(copy, inputs, targets)`` with the trained weights, then re-initialises
    ``blocks`` (default `randomization_blocks`, output side first) one after the other,
    cumulatively, and after each step computes the per-image `spearman` correlation between the
    reference map and ``explain_fn(copy, inputs, targets)``. The targets stay fixed. The RNG is
    seeded with ``torch.manual_seed(seed)`` before the cascade inside ``torch.random.fork_rng``
    (the caller's RNG state is restored). A map that reflects the learned weights should
    decorrelate; see `passes_sanity`.
    """
    work = copy.deepcopy(model)
    targets = targets.to(inputs.device)
    if blocks is None:
        blocks = randomization_blocks(work, inputs[:1])
    reference = explain_fn(work, inputs, targets).detach()
    devices = sorted({p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"})
    steps = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for block in blocks:
            n_reset, n_params = _reinitialise(work, block)
            maps = explain_fn(work, inputs, targets).detach()
            rho = spearman(reference, maps)
            steps.append(SanityStep.from_values(block, rho, n_reset, n_params, empty_maps(maps)))
    return steps


def passes_sanity(steps: Sequence[SanityStep], threshold: float = 0.5) -> bool:
    """True when the method passes the cascading randomisation check (`sanity_verdict`).

    Rule: after the final step (all listed blocks randomised) no randomised map is empty and
    the mean over images of ``|Spearman|`` between the trained-model map and the
    randomised-model map is below ``threshold`` (default 0.5), its 95 % interval over images
    too (an interval that contains the threshold is "undecided", not a pass). A map that stays
    rank-correlated with itself when every weight is random does not depend on what the model
    learned (Adebayo et al. flag exactly that); a map that vanishes has no ranks to compare
    and is no pass.
    """
    if not steps:
        raise ValueError("no sanity steps")
    final = steps[-1]
    empty = (
        final.empty
        if final.empty is not None
        else torch.zeros(len(final.spearman), dtype=torch.bool)
    )
    return sanity_verdict(final.spearman, empty, threshold).passed
