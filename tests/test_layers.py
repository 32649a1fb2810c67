"""camscope.layers: 1x1 layers, one-channel models and the construction cache.

References are brute force in float64: the layer's activations and the gradient of the target
scores through the whole model (autograd), never numbers camscope printed.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torchvision
from conftest import TinyNet, _make
from torch import nn

from camscope.layers import LayerError, check_layer
from camscope.layers import cache as layer_cache
from camscope.methods import METHODS, GradCAM, build_cam

pytestmark = pytest.mark.usefixtures("single_thread")


def _resnet18(in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model.eval().double()


def _gradcam_reference(model: nn.Module, layer: nn.Module, x: torch.Tensor, targets):
    """Grad-CAM at the layer's resolution: ReLU(sum_k mean(dy/dA_k) A_k), whole-model autograd."""
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (acts,) = seen
    score = logits[torch.arange(len(x)), targets].sum()
    (grads,) = torch.autograd.grad(score, acts)
    weights = grads.mean(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1)).detach()


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


# --------------------------------------------------------------------------------------------
# A layer whose output is 1x1 (issue 16): a map, empty, as pytorch-grad-cam's
# --------------------------------------------------------------------------------------------


def test_one_by_one_layer_gives_an_empty_map_like_pytorch_grad_cam(caplog):
    model = _resnet18()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)  # layer4 outputs (2, 512, 1, 1)
    with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
        result = cam.explain(x)
    assert result.maps.shape == (2, 32, 32) and result.raw.shape == (2, 1, 1)
    assert torch.equal(result.maps, torch.zeros(2, 32, 32)) and result.empty.all()
    assert any("1x1" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    pgc = pytest.importorskip("pytorch_grad_cam")
    with pgc.GradCAM(model=model, target_layers=[model.layer4[-1]]) as theirs:
        expected = theirs(input_tensor=x.float().double(), targets=None)
    assert expected.shape == (2, 32, 32) and not expected.any()  # zeros there too
    assert _no_hooks(model)


@pytest.mark.parametrize(
    "method",
    [
        "gradcam",
        "gradcampp",
        "xgradcam",
        "hirescam",
        "layercam",
        "eigencam",
        "eigengradcam",
        "ablationcam",
        "scorecam",
    ],
)
def test_one_by_one_layer_does_not_crash_any_layer_method(method):
    if method not in METHODS:
        pytest.skip(f"{method} not registered")
    model = _resnet18()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with build_cam(method, model, ["layer4"]) as cam:
        result = cam.explain(x)
    assert result.maps.shape == (1, 32, 32) and not result.maps.isnan().any()
    assert result.empty.all() and not result.maps.any()


def test_refusing_a_layer_never_offers_it_as_the_default():
    model = _resnet18()
    with pytest.raises(LayerError) as info:
        check_layer(model, "layer4", (32, 32))  # 1x1: refused where a map is required
    message = str(info.value)
    assert "one spatial position" in message and "the default" not in message
    assert "valid choices (for a 32x32 input): e.g." in message and "layer3" in message
    # At 64x64 the default is valid, and still offered.
    with pytest.raises(LayerError, match="valid choices: the default layer4.1"):
        check_layer(model, "avgpool", (64, 64))
    assert check_layer(model, "layer4", (32, 32), allow_point=True).layout.grid == (1, 1)


# --------------------------------------------------------------------------------------------
# A one-channel model (issue 16): no TypeError, the map of a brute-force Grad-CAM
# --------------------------------------------------------------------------------------------


def test_one_channel_model_matches_a_brute_force_gradcam():
    model = _resnet18(in_channels=1)
    torch.manual_seed(2)
    x = torch.randn(16, 1, 64, 64, dtype=torch.float64)
    with GradCAM(model, target_layers=[model.layer3]) as cam:
        result = cam.explain(x)
    assert result.maps.shape == (16, 64, 64)
    expected = _gradcam_reference(model, model.layer3, x, result.targets)
    assert torch.allclose(result.raw.double(), expected, rtol=1e-5, atol=1e-6)
    assert check_layer(model, "layer3", (64, 64)).output_shape == (1, 256, 4, 4)


# --------------------------------------------------------------------------------------------
# Construction cache: a model and layer already seen are not split or probed again
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_cache():
    layer_cache.clear_cache()
    yield
    layer_cache.clear_cache()


def _count_forwards(model: nn.Module) -> list[int]:
    """Whole-model forwards (the dry passes); the split runs its graphs, not model()."""
    calls = [0]
    model.register_forward_pre_hook(lambda _m, _i: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.usefixtures("fresh_cache")
def test_second_object_reuses_split_and_layout(tiny_inputs):
    model = _make(TinyNet, 0, torch.float64)
    calls = _count_forwards(model)
    with GradCAM(model, "conv3") as cam:
        first = cam.explain(tiny_inputs)
        runner = cam.runner
    probes = calls[0]
    assert probes >= 1  # the layout probe's dry passes (two: (1, 8, 8, 8) is ambiguous)
    with GradCAM(model, "conv3") as cam:
        second = cam.explain(tiny_inputs)
        assert cam.runner is runner
    assert calls[0] == probes  # nothing probed again
    assert torch.equal(first.maps, second.maps)


@pytest.mark.usefixtures("fresh_cache")
def test_a_new_transparent_wrapper_reuses_the_layout(tiny_inputs):
    """The detection task wraps the detector anew for each image's boxes: no new probe."""
    from camscope.logits import LogitsModel

    model = _make(TinyNet, 0, torch.float64)
    calls = [0]  # passes through the first layer (the wrapper calls model.forward: no hook)
    model.conv1.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    with GradCAM(LogitsModel(model), "conv3") as cam:
        first = cam.explain(tiny_inputs)
    probes = calls[0] - 1  # the dry passes before the one evaluation
    assert probes >= 1
    with GradCAM(LogitsModel(model), "conv3") as cam:  # another wrapper object
        second = cam.explain(tiny_inputs)
    assert calls[0] == probes + 2  # one evaluation, no probe
    assert torch.equal(first.maps, second.maps)
    with GradCAM(model, "conv3") as cam:  # unwrapped: its own key (a wrapper could differ)
        cam.explain(tiny_inputs)
    assert calls[0] > probes + 3
    model.fc2 = nn.Linear(16, 5).double()  # a changed structure probes again
    before = calls[0]
    with GradCAM(LogitsModel(model), "conv3") as cam:
        cam.explain(tiny_inputs)
    assert calls[0] > before + 1


@pytest.mark.usefixtures("fresh_cache")
def test_swapped_submodule_is_split_again(tiny_inputs):
    model = _make(TinyNet, 0, torch.float64)
    with GradCAM(model, "conv3") as cam:
        cam.explain(tiny_inputs)
        runner = cam.runner
    torch.manual_seed(5)
    model.fc2 = nn.Linear(16, 5).double()  # after the layer: the old tail would be stale
    with GradCAM(model, "conv3") as cam:
        result = cam.explain(tiny_inputs)
        assert cam.runner is not runner
    expected = _gradcam_reference(model, model.conv3, tiny_inputs, result.targets)
    assert torch.allclose(result.raw.double(), expected, rtol=1e-6, atol=1e-9)
    assert torch.equal(result.logits, model(tiny_inputs).float())


@pytest.mark.usefixtures("fresh_cache")
def test_weights_changed_in_place_are_read_live(tiny_inputs):
    model = _make(TinyNet, 0, torch.float64)
    with GradCAM(model, "conv3") as cam:
        before = cam.explain(tiny_inputs, targets=1)
        runner = cam.runner
    torch.manual_seed(6)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))  # load_state_dict does the same: in place
    with GradCAM(model, "conv3") as cam:
        after = cam.explain(tiny_inputs, targets=1)
        assert cam.runner is runner  # the structure did not change
    expected = _gradcam_reference(model, model.conv3, tiny_inputs, after.targets)
    assert torch.allclose(after.raw.double(), expected, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(before.raw, after.raw)


@pytest.mark.usefixtures("fresh_cache")
def test_train_eval_switch_and_deleted_model():
    model = _make(TinyNet, 0, torch.float64)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with GradCAM(model, "conv3") as cam:
        cam.explain(x)
        runner = cam.runner
    model.train().eval()  # the same modes again: the same split
    with GradCAM(model, "conv3") as cam:
        cam.explain(x)
        assert cam.runner is runner
    gone = weakref.ref(model)
    del model, cam, runner
    gc.collect()
    assert gone() is None and len(layer_cache._ENTRIES) == 0


@pytest.mark.usefixtures("fresh_cache")
def test_hundred_constructions_leak_no_hooks_or_memory():
    psutil = pytest.importorskip("psutil")
    model = _resnet18().float()
    x = torch.randn(1, 3, 64, 64)
    process = psutil.Process()

    def build_and_explain(n: int) -> None:
        for _ in range(n):
            with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
                cam(x)

    build_and_explain(10)
    gc.collect()
    rss = process.memory_info().rss
    build_and_explain(100)
    gc.collect()
    growth = process.memory_info().rss - rss
    assert growth < 32 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB over 100 constructions"
    assert _no_hooks(model)
    entry = layer_cache._ENTRIES[model]
    assert len(entry.splits) == 1 and len(entry.layouts) == 1
