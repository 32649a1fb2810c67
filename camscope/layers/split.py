"""Split a classifier at its CAM target layer: ``features`` up to the layer, ``classify`` after it.

Every method needs the target layer's activations ``A``; AblationCAM and Grad-CAM then only need
the part of the network *after* that layer. `split_model` builds two runners with one interface:

* `FxSplit` traces the model with torch.fx (the target layer kept as a leaf), and cuts the graph
  in two. The *tail* holds every node that depends on the target layer's output; any other value
  the tail reads (a residual branch computed before the layer, say) is returned by the head and
  cached, so ablating ``A`` re-runs only the tail. After ResNet's ``layer4[-1]`` the tail is
  pooling + fc; after ``layer3`` it is ``layer4`` + pooling + fc.
* `HookRunner` is the fallback for models that torch.fx cannot trace or split: ``classify``
  re-runs the whole network on the (cached) input, a forward hook substituting the given
  activations for the layer's output. Same answers, full cost; `split_model` says so on
  stderr and in ``runner.note``.

``run(inputs, grad=True)`` gives the activations, the model's output and a leaf to take the
gradient at, from one evaluation: `FxSplit` runs the head, then the tail once on a leaf that
requires grad; `HookRunner` runs the whole network ONCE, its hook replacing the layer's output
by such a leaf (the layers before it run without autograd, the layers after it with), so the
output's graph reaches the leaf and stops there.

Hooks are registered for the duration of one call and always removed (try/finally), so nothing
leaks into the caller's model.
"""

from __future__ import annotations

import inspect
import logging
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.fx as fx
from torch import nn

log = logging.getLogger("camscope")

__all__ = ["FeatureRunner", "FxSplit", "HookRunner", "LayerRun", "SplitError", "split_model"]


class SplitError(RuntimeError):
    """The model cannot be split at the requested layer."""


class LayerRun(NamedTuple):
    """One evaluation of the network (`FeatureRunner.run`).

    Attributes:
        output: the layer's output (detached).
        cache: what `FeatureRunner.classify` reads besides the layer's output.
        model_output: the model's output for the inputs, as the model returns it.
        leaf: with ``grad``, the tensor (requiring grad, equal to ``output``) that the layer's
            output was replaced by: ``model_output``'s graph starts there, so a gradient of
            the output w.r.t. ``leaf`` is the gradient at the layer. None without ``grad``.
    """

    output: torch.Tensor
    cache: tuple[torch.Tensor, ...]
    model_output: Any
    leaf: torch.Tensor | None


class FeatureRunner:
    """Interface: ``features(x) -> (A, cache)`` and ``classify(A, cache) -> logits``.

    ``cache`` is a tuple of tensors whose first dimension is the batch; `expand_cache` repeats one
    image's cache for a batch of modified activations of that image.
    """

    exact_split: bool = False
    note: str = ""

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run the network up to the layer.

        Args:
            inputs: (N, C, H, W) model inputs.

        Returns:
            The layer's activations ``A`` (first dimension N) and the ``cache`` of per-image
            tensors that `classify` needs besides ``A``.
        """
        raise NotImplementedError

    def classify(self, activations: torch.Tensor, cache: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the network after the layer on (possibly modified) ``activations``.

        Args:
            activations: activations shaped like those `features` returned (same batch as
                ``cache``; see `expand_cache` to re-run one image's activations many times).
            cache: the cache `features` returned for those images.

        Returns:
            The model's logits for ``activations``; the caller's tensor is never changed.
        """
        raise NotImplementedError

    def run(self, inputs: torch.Tensor, *, grad: bool = False) -> LayerRun:
        """`features`, then `classify` on them (on a leaf that requires grad with ``grad``).

        Args:
            inputs: (N, C, H, W) model inputs.
            grad: build the graph from the layer's output to the model's output.
        """
        with torch.no_grad():
            output, cache = self.features(inputs)
            if not grad:
                return LayerRun(output, cache, self.classify(output, cache), None)
        leaf = output.detach().requires_grad_(True)
        with torch.enable_grad():
            return LayerRun(output, cache, self.classify(leaf, cache), leaf)

    @staticmethod
    def expand_cache(
        cache: Sequence[torch.Tensor], index: int, batch: int
    ) -> tuple[torch.Tensor, ...]:
        """One image's cached tensors, broadcast (no copy) to ``batch`` rows."""
        return tuple(c[index : index + 1].expand(batch, *c.shape[1:]) for c in cache)


class _LeafTracer(fx.Tracer):
    """torch.fx tracer that keeps the target layer (and torch.nn built-ins) as leaves."""

    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name == self.leaf:
            return True
        if self.leaf.startswith(module_qualified_name + "."):
            return False  # must trace into the layer's ancestors to reach it
        return super().is_leaf_module(m, module_qualified_name)


def _default_args(model: nn.Module) -> dict[str, object] | None:
    """The forward's optional arguments after the image, fixed to their defaults for tracing.

    timm's ``forward(x, attn_mask=None, ...)`` would otherwise trace them as inputs that the
    tail reads from the head.
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    fixed = {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return fixed or None


_SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device"})


def _is_shape(node: fx.Node) -> bool:
    """``x.shape``, ``x.size()``, ``x.dim()`` and items of them: cheap, recomputed in the tail."""
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target in (operator.getitem, len):
        return isinstance(node.args[0], fx.Node) and _is_shape(node.args[0])
    return False


def _tail_inputs(
    graph: fx.Graph, target: fx.Node, tail_nodes: set[fx.Node]
) -> tuple[set[fx.Node], list[fx.Node]]:
    """What the tail needs besides the layer's output: ``(recomputed, external)``.

    External values are computed by the head and cached per image. Two kinds are recomputed in
    the tail instead, since caching them would tie the tail to the original batch: values that
    do not depend on the input at all (Swin's relative position bias, built from parameters)
    and shapes (``B, H, W, C = x.shape``: from the cached ``x``, expanded to the new batch,
    they give the new batch size). Values the model returns without the layer (an auxiliary
    output) are external too: the head computes them, the tail passes them on.
    """
    from_input: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(a in from_input for a in node.all_input_nodes):
            from_input.add(node)
    recomputed: set[fx.Node] = set()
    external: list[fx.Node] = []

    def need(arg: fx.Node) -> None:
        if arg in tail_nodes or arg in recomputed or arg in external or arg.op == "get_attr":
            return
        if arg not in from_input or _is_shape(arg):
            recomputed.add(arg)
            for source in arg.all_input_nodes:
                need(source)
        else:
            external.append(arg)

    for node in graph.nodes:
        if (node in tail_nodes and node is not target) or node.op == "output":
            for arg in node.all_input_nodes:
                need(arg)
    return recomputed, external


class FxSplit(FeatureRunner):
    """Head/tail split of a torch.fx-traceable model at ``layer`` (a canonical dotted name)."""

    exact_split = True

    def __init__(self, model: nn.Module, layer: str) -> None:
        tracer = _LeafTracer(layer)
        try:
            graph = tracer.trace(model, concrete_args=_default_args(model))
        except Exception as exc:  # noqa: BLE001 - any tracing failure means "cannot split"
            raise SplitError(
                f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})"
            ) from exc
        calls = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
        if len(calls) != 1:
            raise SplitError(f"layer {layer} is called {len(calls)} times in the forward pass")
        target = calls[0]
        output = next(n for n in graph.nodes if n.op == "output")

        tail_nodes: set[fx.Node] = {target}
        for node in graph.nodes:  # topological order
            if node is not target and any(a in tail_nodes for a in node.all_input_nodes):
                tail_nodes.add(node)
        if not any(a in tail_nodes for a in output.all_input_nodes):
            raise SplitError(f"the model's output does not depend on layer {layer}")
        recomputed, external = _tail_inputs(graph, target, tail_nodes)

        # Head: everything that does not depend on the layer, plus the layer itself.
        head = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in graph.nodes:
            if node.op == "output" or (node in tail_nodes and node is not target):
                continue
            env[node] = head.node_copy(node, lambda n: env[n])
        head.output((env[target], *(env[n] for n in external)))

        # Tail: the layer's output and the cached externals come in as placeholders.
        tail = fx.Graph()
        tenv: dict[fx.Node, fx.Node] = {target: tail.placeholder("activations")}
        for i, node in enumerate(external):
            tenv[node] = tail.placeholder(f"cached_{i}")
        for node in graph.nodes:
            in_tail = node in tail_nodes and node is not target and node.op != "output"
            if in_tail or node in recomputed or node.op == "get_attr":
                tenv[node] = tail.node_copy(node, lambda n: tenv[n])
        tail.output(fx.graph.map_arg(output.args[0], lambda n: tenv[n]))

        self.head = fx.GraphModule(model, head, class_name="CamHead")
        self.tail = fx.GraphModule(model, tail, class_name="CamTail")
        self.head.graph.eliminate_dead_code()
        self.tail.graph.eliminate_dead_code()
        self.head.recompile()
        self.tail.recompile()
        self.layer = layer
        self.num_cached = len(external)
        self.note = (
            f"split at {layer} with torch.fx: the tail re-runs {len(tail_nodes) - 1} graph nodes"
            f" and reads {len(external)} cached tensor(s)"
        )

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run the head graph; SplitError when the tail reads anything but per-image tensors."""
        activations, *cache = self.head(inputs)
        if not isinstance(activations, torch.Tensor):
            raise SplitError(f"layer {self.layer} does not output a single tensor")
        for value in cache:
            if (
                not isinstance(value, torch.Tensor)
                or value.dim() == 0
                or value.shape[0] != len(inputs)
            ):
                raise SplitError(
                    f"the network after {self.layer} reads a value that is not a per-image "
                    "tensor, so it cannot be re-run on its own"
                )
        return activations, tuple(cache)

    def classify(self, activations: torch.Tensor, cache: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the tail graph on a copy of ``activations`` and the cached tensors."""
        # The tail may start with an in-place op on the layer's output (ResNet's
        # ``ReLU(inplace=True)`` after ``bn1``): give it a copy, so the caller's activations stay
        # intact and a leaf that requires grad (Grad-CAM) is never written in place.
        return self.tail(activations.clone(), *cache)


class HookRunner(FeatureRunner):
    """Fallback: whole-network runs with a forward hook that reads or replaces the layer output."""

    exact_split = False

    def __init__(self, model: nn.Module, layer: str, module: nn.Module, reason: str = "") -> None:
        self.model = model
        self.layer = layer
        self.module = module
        self.note = (
            f"could not split the model at {layer} ({reason}); every re-evaluation re-runs the "
            "whole network"
        )

    def features(self, inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run the whole model, capturing a copy of the layer output; the cache is ``(inputs,)``."""
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            # A copy: an in-place op after the layer would otherwise change what we captured.
            captured.append(out.clone() if isinstance(out, torch.Tensor) else out)

        handle = self.module.register_forward_hook(hook)
        try:
            self.model(inputs)
        finally:
            handle.remove()
        if len(captured) != 1 or not isinstance(captured[0], torch.Tensor):
            raise SplitError(f"layer {self.layer} ran {len(captured)} times or returned no tensor")
        return captured[0], (inputs,)

    def run(self, inputs: torch.Tensor, *, grad: bool = False) -> LayerRun:
        """ONE whole-network pass: the layer's output, the model's output and (``grad``) a leaf.

        Without ``grad`` the hook only copies the layer's output. With ``grad`` it replaces the
        output by a copy of a leaf that requires grad and turns autograd on for the layers after
        it (those before it ran without): the same values and gradient as `features` followed
        by `classify` on a leaf, from one pass instead of two.
        """
        captured: list[Any] = []

        def hook(_m: nn.Module, _i: object, out: Any) -> torch.Tensor | None:
            if not isinstance(out, torch.Tensor):
                captured.append(out)
                return None
            leaf = out.detach().clone()  # in-place ops after the layer must not touch ours
            captured.append(leaf)
            if not grad:
                return None
            torch.set_grad_enabled(True)  # the layers after this one; restored by no_grad
            return leaf.requires_grad_(True).clone()  # a leaf can't be written in place

        handle = self.module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                model_output = self.model(inputs)
        finally:
            handle.remove()
        if len(captured) != 1 or not isinstance(captured[0], torch.Tensor):
            raise SplitError(f"layer {self.layer} ran {len(captured)} times or returned no tensor")
        leaf = captured[0] if grad else None
        return LayerRun(captured[0].detach(), (inputs,), model_output, leaf)

    def classify(self, activations: torch.Tensor, cache: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the whole model on the cached inputs with the layer output replaced."""
        (inputs,) = cache

        def hook(_m: nn.Module, _i: object, _out: torch.Tensor) -> torch.Tensor:
            return activations.clone()  # in-place ops after the layer must not touch ours

        handle = self.module.register_forward_hook(hook)
        try:
            return self.model(inputs)
        finally:
            handle.remove()


def split_model(
    model: nn.Module, layer: str, module: nn.Module, *, allow_fallback: bool = True
) -> FeatureRunner:
    """`FxSplit` when the model can be split at ``layer``, else `HookRunner` (said on stderr)."""
    try:
        return FxSplit(model, layer)
    except SplitError as exc:
        if not allow_fallback:
            raise
        runner = HookRunner(model, layer, module, reason=str(exc))
        log.warning("%s", runner.note)
        return runner
