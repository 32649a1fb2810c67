"""camscope.layers.split: the torch.fx head/tail split and the hook fallback, against the model.

The reference for "the tail" is always the whole model with a forward hook that substitutes the
given activations for the layer's output.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import TinyNet
from torch import nn

from camscope.layers import LayerError, resolve_layer
from camscope.layers.split import FeatureRunner, FxSplit, HookRunner, SplitError, split_model
from camscope.methods import AblationCAM, GradCAM

pytestmark = pytest.mark.usefixtures("single_thread")


def whole_model(model: nn.Module, layer: str, x: torch.Tensor, replace=None):
    """(layer output, logits) of the whole model; ``replace`` substitutes the layer output."""
    _, module = resolve_layer(model, layer)
    seen = []

    def hook(_m, _i, out):
        seen.append(out.clone())
        return None if replace is None else replace.clone()

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0], logits


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval().double()


@pytest.fixture(scope="module")
def x32():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32, dtype=torch.float64)


def check_runner(runner: FeatureRunner, model, layer, x):
    """features == the layer's output; classify(features) == model(x); classify(random A)
    == the whole model with A substituted; the activations are not modified."""
    expected_acts, expected_logits = whole_model(model, layer, x)
    with torch.no_grad():
        acts, cache = runner.features(x)
        assert torch.equal(acts, expected_acts)
        kept = acts.clone()
        assert (runner.classify(acts, cache) - expected_logits).abs().max() <= 1e-10
        assert torch.equal(acts, kept), "classify modified the activations in place"
        other = torch.randn_like(acts)
        _, substituted = whole_model(model, layer, x, replace=other)
        assert (runner.classify(other, cache) - substituted).abs().max() <= 1e-10
        # One image's cache broadcast to a batch of modified activations of that image.
        batch = torch.randn(3, *acts.shape[1:], dtype=acts.dtype)
        _, sub1 = whole_model(model, layer, x[1:2].expand(3, -1, -1, -1), replace=batch)
        got = runner.classify(batch, runner.expand_cache(cache, 1, 3))
        assert (got - sub1).abs().max() <= 1e-10
    assert no_hooks(model)


@pytest.mark.parametrize(
    "layer, cached",
    [("act1", 0), ("conv2", 0), ("act2", 0), ("conv3", 1), ("act3", 0), ("fc1", 0)],
)
def test_fx_split_tiny_model(tiny_model, tiny_inputs, layer, cached):
    runner = FxSplit(tiny_model, layer)
    assert runner.exact_split and runner.num_cached == cached
    assert f"split at {layer}" in runner.note
    check_runner(runner, tiny_model, layer, tiny_inputs)


@pytest.mark.parametrize(
    "layer, cached",
    [
        ("layer4.1", 0),
        ("layer4.0", 0),
        ("layer3", 0),
        ("layer1.0.conv1", 1),  # the block input is the identity branch
        ("layer4.0.bn2", 1),  # downsample(x) is computed before, read after
        ("layer4.0.bn1", 1),  # followed by ReLU(inplace=True)
        ("layer4.1.relu", None),  # called twice: not splittable
    ],
)
def test_fx_split_resnet18(resnet18, x32, layer, cached):
    if cached is None:
        with pytest.raises(SplitError, match="called 2 times"):
            FxSplit(resnet18, layer)
        return
    runner = FxSplit(resnet18, layer)
    assert runner.num_cached == cached, runner.note
    check_runner(runner, resnet18, layer, x32)


def test_split_shares_the_model_parameters(resnet18):
    runner = FxSplit(resnet18, "layer3")
    assert runner.tail.get_submodule("fc") is resnet18.fc
    assert runner.head.get_submodule("layer1.0.conv1") is resnet18.layer1[0].conv1
    tail_params = {id(p) for p in runner.tail.parameters()}
    assert tail_params <= {id(p) for p in resnet18.parameters()}
    assert id(resnet18.conv1.weight) not in tail_params  # the stem is not in the tail


def test_expand_cache_is_a_view():
    cache = (torch.randn(4, 3, 5, 5), torch.randn(4, 7))
    out = FeatureRunner.expand_cache(cache, 2, 6)
    assert [tuple(c.shape) for c in out] == [(6, 3, 5, 5), (6, 7)]
    for c, src in zip(out, cache, strict=True):
        assert c.stride(0) == 0 and c.data_ptr() == src[2].data_ptr()
        assert torch.equal(c[5], src[2])


# --------------------------------------------------------------------------------------------
# Hook fallback
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["act2", "conv3", "act1"])
def test_hook_runner_matches_the_model(tiny_model, tiny_inputs, layer):
    _, module = resolve_layer(tiny_model, layer)
    runner = HookRunner(tiny_model, layer, module, reason="test")
    assert not runner.exact_split and "test" in runner.note
    check_runner(runner, tiny_model, layer, tiny_inputs)


def test_hook_runner_with_inplace_relu_after_the_layer(inplace_model, tiny_inputs):
    runner = HookRunner(inplace_model, "bn", inplace_model.bn)
    acts, _ = runner.features(tiny_inputs)
    assert acts.min() < 0, "captured the activations after the in-place ReLU"
    check_runner(runner, inplace_model, "bn", tiny_inputs)
    check_runner(FxSplit(inplace_model, "bn"), inplace_model, "bn", tiny_inputs)


def test_hook_runner_removes_hooks_on_errors(tiny_model):
    runner = HookRunner(tiny_model, "act2", tiny_model.act2)
    bad = torch.randn(1, 4, 16, 16, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        runner.features(bad)
    assert no_hooks(tiny_model)
    with pytest.raises(RuntimeError):
        runner.classify(torch.zeros(1, 8, 8, 8, dtype=torch.float64), (bad,))
    assert no_hooks(tiny_model)


def test_untraceable_model_falls_back_with_one_warning(untraceable_model, tiny_inputs, caplog):
    with pytest.raises(SplitError, match="torch.fx cannot trace"):
        FxSplit(untraceable_model, "act2")
    with pytest.raises(SplitError):
        split_model(untraceable_model, "act2", untraceable_model.act2, allow_fallback=False)
    assert not caplog.records
    runner = split_model(untraceable_model, "act2", untraceable_model.act2)
    assert isinstance(runner, HookRunner)
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and said[0].startswith("could not split the model at act2")
    assert "whole network" in said[0]
    check_runner(runner, untraceable_model, "act2", tiny_inputs)


# --------------------------------------------------------------------------------------------
# Models that cannot be split
# --------------------------------------------------------------------------------------------


class SharedReLU(TinyNet):
    """One ReLU module used twice: its output is not one place in the graph."""

    def forward(self, x):
        x = self.act1(self.conv1(x))
        x = self.act1(self.conv2(x))
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.act4(self.fc1(x)))


class DeadBranch(TinyNet):
    """``conv3`` runs, but nothing uses its output; ``act3`` never runs."""

    def forward(self, x):
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        self.conv3(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc2(self.act4(self.fc1(x)))


class ScaledTail(TinyNet):
    """The tail reads a head value that is not a per-image tensor (a per-channel scale)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 8))

    def forward(self, x):
        s = self.scale * 2  # computed before the layer, used after it
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        x = self.conv3(x) * s[None, :, None, None]
        x = torch.flatten(self.pool(self.act3(x)), 1)
        return self.fc2(self.act4(self.fc1(x)))


class ShapeTail(TinyNet):
    """The tail reads the batch size taken from the input (a Python int in the cache)."""

    def forward(self, x):
        n = x.shape[0]
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        x = self.act3(self.conv3(x)).reshape(n, 8, -1).mean(2)
        return self.fc2(self.act4(self.fc1(x)))


def _make(cls):
    torch.manual_seed(0)
    return cls().eval().double()


def test_split_errors():
    with pytest.raises(SplitError, match="called 2 times"):
        FxSplit(_make(SharedReLU), "act1")
    with pytest.raises(SplitError, match="called 0 times"):
        FxSplit(_make(DeadBranch), "act3")
    with pytest.raises(SplitError, match="does not depend on layer conv3"):
        FxSplit(_make(DeadBranch), "conv3")


def test_layer_run_twice_is_an_error_even_with_hooks(tiny_inputs):
    model = _make(SharedReLU)
    with pytest.raises((SplitError, LayerError), match="(ran|runs) 2 times"):
        GradCAM(model, "act1").explain(tiny_inputs)
    assert no_hooks(model)


class InputStatTail(TinyNet):
    """The tail reads a statistic of the whole batch computed before the layer (0-d tensor)."""

    def forward(self, x):
        s = x.mean()
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        x = torch.flatten(self.pool(self.act3(self.conv3(x) * s)), 1)
        return self.fc2(self.act4(self.fc1(x)))


def _check_ablation_weights(model, inputs, weights):
    """AblationCAM weights against the brute force through the whole model."""
    acts, logits = whole_model(model, "conv3", inputs)
    targets = logits.argmax(1)
    for n in range(len(inputs)):
        for k in (0, 3, 7):
            ablated = acts[n : n + 1].clone()
            ablated[0, k] = 0
            _, out = whole_model(model, "conv3", inputs[n : n + 1], replace=ablated)
            base = logits[n, targets[n]]
            expected = (base - out[0, targets[n]]) / base
            assert abs(float(weights[n, k]) - float(expected)) <= 1e-5


@pytest.mark.parametrize("cls", [ScaledTail, ShapeTail])
def test_parameter_values_and_shapes_are_recomputed_in_the_tail(cls, tiny_inputs):
    model = _make(cls)
    runner = FxSplit(model, "conv3")
    assert runner.num_cached == 0 or cls is ShapeTail  # ShapeTail caches the input for x.shape
    activations, cache = runner.features(tiny_inputs)
    assert torch.allclose(runner.classify(activations, cache), model(tiny_inputs))
    # a batch of modified activations of one image: shapes follow the new batch
    expanded = runner.expand_cache(cache, 1, 5)
    many = activations[1:2].expand(5, -1, -1, -1)
    assert torch.allclose(runner.classify(many, expanded), model(tiny_inputs[1:2]).expand(5, -1))
    ablation = AblationCAM(model, "conv3")
    _check_ablation_weights(model, tiny_inputs, ablation.explain(tiny_inputs).weights)
    assert ablation.runner.exact_split
    assert no_hooks(model)


def test_cache_that_is_not_per_image_falls_back_to_hooks(tiny_inputs, caplog):
    model = _make(InputStatTail)
    runner = FxSplit(model, "conv3")  # traces fine; the problem shows on the first batch
    with pytest.raises(SplitError, match="not a per-image tensor"):
        runner.features(tiny_inputs)
    ablation = AblationCAM(model, "conv3")
    with_hooks = ablation.explain(tiny_inputs)
    assert isinstance(ablation.runner, HookRunner)
    assert len(ablation.notes) == 1 and "per-image" in ablation.notes[0]
    assert any("per-image" in r.getMessage() for r in caplog.records)
    _check_ablation_weights(model, tiny_inputs, with_hooks.weights)
    assert no_hooks(model)


# --------------------------------------------------------------------------------------------
# run(grad=True): activations, model output and the gradient at the layer from one evaluation
# --------------------------------------------------------------------------------------------


def reference_gradient(model: nn.Module, layer: str, x: torch.Tensor, column: int):
    """d logits[:, column].sum() / d(layer output): the whole model, the output substituted."""
    acts, _ = whole_model(model, layer, x)
    leaf = acts.clone().requires_grad_(True)
    _, module = resolve_layer(model, layer)
    handle = module.register_forward_hook(lambda _m, _i, _o: leaf.clone())
    try:
        with torch.enable_grad():
            (grads,) = torch.autograd.grad(model(x)[:, column].sum(), leaf)
    finally:
        handle.remove()
    return grads


@pytest.mark.parametrize(
    ("kind", "fixture", "layer"),
    [
        ("hook", "tiny_model", "act2"),
        ("hook", "tiny_model", "conv3"),
        ("hook", "inplace_model", "bn"),
        ("fx", "tiny_model", "conv3"),
        ("fx", "inplace_model", "bn"),
    ],
)
@pytest.mark.parametrize("caller_grad", [True, False])
def test_run_with_grad_gives_everything_from_one_pass(
    request, tiny_inputs, kind, fixture, layer, caller_grad
):
    model = request.getfixturevalue(fixture)
    _, module = resolve_layer(model, layer)
    runner = HookRunner(model, layer, module) if kind == "hook" else FxSplit(model, layer)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen: list[bool] = []  # whether the first layer's output carries a graph
    handle = first.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    try:
        with torch.set_grad_enabled(caller_grad):
            run = runner.run(tiny_inputs, grad=True)
            assert torch.is_grad_enabled() == caller_grad  # the caller's mode is restored
    finally:
        handle.remove()
    assert seen == [False]  # one pass; the layers before the target ran without autograd
    assert no_hooks(model)
    expected_acts, expected_logits = whole_model(model, layer, tiny_inputs)
    assert (run.output - expected_acts).abs().max() <= 1e-12 and not run.output.requires_grad
    assert (run.model_output - expected_logits).abs().max() <= 1e-10
    assert run.leaf is not None and run.leaf.is_leaf and run.leaf.requires_grad
    (grads,) = torch.autograd.grad(run.model_output[:, 2].sum(), run.leaf)
    expected = reference_gradient(model, layer, tiny_inputs, 2)
    assert (grads - expected).abs().max() <= 1e-10 * (1 + expected.abs().max())
    plain = runner.run(tiny_inputs)  # no grad: no leaf, no graph
    assert plain.leaf is None and not plain.model_output.requires_grad
    assert (plain.model_output - expected_logits).abs().max() <= 1e-10


def test_hook_runner_run_removes_hooks_and_restores_grad_mode_on_errors(tiny_model):
    runner = HookRunner(tiny_model, "act2", tiny_model.act2)
    bad = torch.randn(1, 4, 16, 16, dtype=torch.float64)
    with torch.no_grad(), pytest.raises(RuntimeError):
        runner.run(bad, grad=True)
    assert no_hooks(tiny_model) and torch.is_grad_enabled()


@pytest.mark.parametrize("method", ["GradCAM", "ShapleyCAM", "HiResCAM", "GradCAMPlusPlus"])
def test_gradient_methods_through_the_hook_runner_match_the_split(
    tiny_model, untraceable_model, tiny_inputs, method
):
    """One whole-network pass (the leaf in place of the layer output) gives the split's maps;
    ShapleyCAM's Hessian-vector product (double backward) goes through that pass's graph."""
    import camscope.methods as methods
    from camscope.methods import ClassifierOutputReST

    cls = getattr(methods, method)
    targets = [ClassifierOutputReST(c) for c in (1, 3, 4)][: len(tiny_inputs)]
    calls: list[int] = []
    with cls(untraceable_model, "act2") as cam:
        assert isinstance(cam.runner, HookRunner)
        cam.explain(tiny_inputs, targets)  # the first call also probes the layer's layout
        handle = untraceable_model.conv1.register_forward_hook(lambda *_: calls.append(1))
        got = cam.explain(tiny_inputs, targets)
        handle.remove()
    assert len(calls) == 1  # ONE whole-network pass
    with cls(tiny_model, "act2") as cam:
        assert isinstance(cam.runner, FxSplit)
        expected = cam.explain(tiny_inputs, targets)
    assert (got.weights - expected.weights).abs().max() <= 1e-9 * (1 + expected.weights.abs().max())
    assert (got.maps - expected.maps).abs().max() <= 1e-6


def test_context_logits_carry_no_graph(untraceable_model, tiny_inputs):
    with GradCAM(untraceable_model, "act2") as cam:
        result = cam.explain(tiny_inputs)
    assert not result.logits.requires_grad and not cam.outputs.requires_grad
