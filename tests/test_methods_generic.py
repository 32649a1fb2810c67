"""The contract every registered method keeps, run over `METHODS` automatically.

A method added to the registry is enrolled here without editing this file: hooks, batching,
dtypes, output shape/range/dtype/device, empty maps, target forms, multi-layer calls and the
registry's metadata. Methods are built with their ``sanity_options`` (the registry's cheap
settings) and, where they run an inference engine, its eager backend.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TinyNet, _make
from torch import nn

from camscope.methods import (
    METHODS,
    BaseCAM,
    ClassifierOutputTarget,
    OptionSpec,
    build_cam,
    get_method,
    method_options,
)
from camscope.methods.registry import FAMILIES

pytestmark = pytest.mark.usefixtures("single_thread")

SPECS = list(METHODS.values())
IDS = [s.name for s in SPECS]


def cheap(spec) -> dict:
    options = dict(spec.sanity_options)
    if any(o.name == "backend" for o in spec.options):
        options["backend"] = "eager"
    return options


def make(spec, model, layers="act2"):
    return build_cam(spec.name, model, layers, **cheap(spec))


@pytest.fixture(scope="module")
def models():
    return {dtype: _make(TinyNet, 0, dtype) for dtype in (torch.float32, torch.float64)}


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(5)
    return torch.randn(3, 3, 16, 16, dtype=torch.float64)


def no_hooks(model: nn.Module) -> None:
    leaks = [n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not leaks, f"hooks left on {leaks}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_registry_metadata_is_complete(spec):
    assert issubclass(spec.cls, BaseCAM) and spec.cls.name == spec.name
    assert spec.label and spec.cost and spec.family in FAMILIES
    assert "https://" in spec.paper
    doc = spec.cls.__doc__ or ""
    assert "https://" in doc and ">>>" in doc, "docstring: paper and a runnable example"
    assert get_method(spec.name) is spec and get_method(spec.name.upper()) is spec
    for alias in spec.aliases:
        assert get_method(alias) is spec
    for option in spec.options:
        assert isinstance(option, OptionSpec) and option.cli.startswith("--") and option.help
        option.validate(option.default)
    inits = [vars(c)["__init__"] for c in spec.cls.__mro__ if "__init__" in vars(c)]
    accepted = {v for f in inits if hasattr(f, "__code__") for v in f.__code__.co_varnames}
    assert set(spec.sanity_options) <= accepted


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_contract_and_batch_equals_one_at_a_time(spec, models, inputs, dtype):
    x = inputs.to(dtype)
    with make(spec, models[dtype]) as cam:
        result = cam.explain(x)
        singles = [cam.explain(x[i : i + 1]) for i in range(len(x))]
    assert result.maps.shape == (3, 16, 16)
    assert result.maps.dtype == torch.float32 and result.maps.device == x.device
    assert not result.maps.isnan().any() and not result.raw.isnan().any()
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    assert result.raw.dim() == 3 and result.raw.dtype == torch.float32
    assert result.targets.dtype == torch.int64 and result.empty.dtype == torch.bool
    flat = result.maps.flatten(1)
    assert torch.equal(result.empty, flat.amax(1) == flat.amin(1))
    assert torch.equal(result.targets, result.logits.argmax(1))
    for i, single in enumerate(singles):
        assert (single.maps[0] - result.maps[i]).abs().max() <= 1e-4, i


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_float32_and_float64_agree(spec, models, inputs):
    maps = [make(spec, models[d])(inputs.to(d), [1, 2, 3]) for d in (torch.float32, torch.float64)]
    assert (maps[0] - maps[1]).abs().max() <= 2e-3


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_hooks_removed_after_calls_and_exceptions(spec, inputs):
    model = _make(TinyNet, 0, torch.float64)
    bad = torch.randn(2, 4, 16, 16, dtype=torch.float64)  # wrong channel count
    with make(spec, model) as cam:
        cam.explain(inputs[:2])
        no_hooks(model)
        with pytest.raises(RuntimeError):
            cam.explain(bad)
        no_hooks(model)
    with pytest.raises(RuntimeError), make(spec, model) as cam:
        cam(bad)
    no_hooks(model)
    assert not any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_target_forms_agree(spec, models, inputs):
    cam = make(spec, models[torch.float64])
    classes = [4, 0, 2]
    reference = cam(inputs, classes)
    forms = [
        torch.tensor(classes),
        tuple(classes),
        [ClassifierOutputTarget(c) for c in classes],
        [lambda row, c=c: row[c] for c in classes],  # any callable on the output row
    ]
    for form in forms:
        assert (cam(inputs, form) - reference).abs().max() <= 1e-6, form
    same = cam(inputs, 2)
    assert (cam(inputs, [2, 2, 2]) - same).abs().max() <= 1e-6
    assert (cam(inputs, lambda row: row[2]) - same).abs().max() <= 1e-6


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_wrong_length_targets_are_rejected(spec, models, inputs):
    cam = make(spec, models[torch.float64])
    with pytest.raises(ValueError, match="2 targets for a batch of 3"):
        cam(inputs, [0, 1])
    with pytest.raises(ValueError, match="4 targets for a batch of 3"):
        cam(inputs, [ClassifierOutputTarget(0)] * 4)
    with pytest.raises(ValueError, match="out of range"):
        cam(inputs, 5)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_multi_layer_call(spec, models, inputs):
    model = models[torch.float64]
    with make(spec, model, [model.conv3, "act2"]) as cam:
        maps = cam(input_tensor=inputs, targets=[1, 1, 1])
    assert maps.shape == (3, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert not maps.isnan().any()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_flat_layer_gives_empty_maps_never_nan(spec, inputs):
    model = _make(TinyNet, 0, torch.float64)
    with torch.no_grad():
        model.conv2.weight.zero_()
        model.conv2.bias.zero_()  # act2 is all zero
    result = make(spec, model).explain(inputs)
    assert not result.maps.isnan().any() and not result.raw.isnan().any()
    flat = result.maps.flatten(1)
    assert torch.equal(result.empty, flat.amax(1) == flat.amin(1))
    if spec.cls.needs_layer:
        assert result.empty.all() and (result.maps == 0).all()


def test_method_options_route_and_reject():
    assert method_options(["scorecam", "gradcam"], {"max_channels": 4}) == {
        "scorecam": {"max_channels": 4},
        "gradcam": {},
    }
    both = method_options(["sscam", "iscam"], {"sscam_samples": 3, "iscam_samples": None})
    assert both == {"sscam": {"num_samples": 3}, "iscam": {}}
    with pytest.raises(
        ValueError, match=r"--rise-masks \(rise_masks\) applies to rise, none of which"
    ):
        method_options(["gradcam"], {"rise_masks": 10})
    with pytest.raises(ValueError, match="--rise-masks: must be >= 1"):
        method_options(["rise"], {"rise_masks": 0})
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from gradcam"):
        get_method("nope")
    assert get_method("gradcam++").name == get_method("Grad-CAM++").name == "gradcampp"


class TokenNet(nn.Module):
    """A ViT-shaped toy: patch embedding, class token, a token block, head on the class token."""

    def __init__(self, dim: int = 6, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.block = nn.Linear(dim, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (N, hw, C)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
        t = torch.tanh(self.block(t))
        t = t + torch.tanh(self.mix(t.mean(dim=1, keepdim=True)))  # tokens talk to each other
        return self.head(t[:, 0] + t[:, 1:].mean(dim=1))


def tokens_to_map(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ViT reshape_transform for a 4x4 grid."""
    return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("name", ["gradcam", "ablationcam", "layercam"])
def test_reshape_transform_on_token_layer(name, inputs):
    torch.manual_seed(0)
    model = TokenNet().double().eval()
    cam = build_cam(name, model, "block", reshape_transform=tokens_to_map)
    result = cam.explain(inputs, [1, 2, 3])
    assert result.raw.shape == (3, 4, 4) and not result.maps.isnan().any()
    if name == "ablationcam":  # the inverse view puts the ablated map back between the tokens
        store = []
        h = model.block.register_forward_hook(lambda _m, _i, o: store.append(o))
        with torch.no_grad():
            base = model(inputs)
        h.remove()
        acts = tokens_to_map(store[0])
        n, k = 1, 2
        ablated = store[0][n : n + 1].clone()
        ablated[:, 1:, k] = 0  # channel k of every patch token; the class token kept
        h = model.block.register_forward_hook(lambda _m, _i, _o: ablated)
        with torch.no_grad():
            out = model(inputs[n : n + 1])
        h.remove()
        expected = (base[n, 2] - out[0, 2]) / base[n, 2]
        assert abs(float(result.weights[n, k]) - float(expected)) <= 1e-6
        assert acts.shape == (3, 6, 4, 4)


def test_layer_that_is_not_a_map_is_refused(inputs):
    from camscope.layers import LayerError

    torch.manual_seed(0)
    model = TokenNet().double().eval()
    with pytest.raises(LayerError, match=r"block: output \(1, 17, 6\).*not a spatial map"):
        build_cam("gradcam", model, "block").explain(inputs)


class DictNet(TinyNet):
    def forward(self, x):
        return {"aux": x.mean(dim=(1, 2, 3)), "logits": super().forward(x)}


@pytest.mark.parametrize("name", ["gradcam", "scorecam", "fullgrad", "rise"])
def test_models_returning_dicts_and_tuples(name, inputs):
    plain = _make(TinyNet, 0, torch.float64)
    wrapped = _make(DictNet, 0, torch.float64)
    opts = {"backend": "eager"} if name in ("scorecam", "rise") else {}
    opts.update({"rise_masks": 64} if name == "rise" else {})
    expected = build_cam(name, plain, "act2", **opts)(inputs)
    assert (build_cam(name, wrapped, "act2", **opts)(inputs) - expected).abs().max() <= 1e-6
    picked = build_cam(name, wrapped, "act2", output="logits", **opts)(inputs)
    assert (picked - expected).abs().max() <= 1e-6


class SegNet(nn.Module):
    """A fully convolutional toy segmenter: (N, 3, H, W) -> (N, K, H, W) class scores."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)))


def test_segmentation_target_sum_of_class_scores_over_a_mask(inputs):
    from camscope.methods import GradCAM, SemanticSegmentationTarget

    torch.manual_seed(0)
    model = SegNet().double().eval()
    mask = torch.zeros(16, 16, dtype=torch.float64)
    mask[4:9, 2:12] = 1
    targets = [SemanticSegmentationTarget(2, mask)] * len(inputs)
    result = GradCAM(model, "act").explain(inputs, targets)
    acts = torch.relu(model.conv(inputs)).detach().requires_grad_(True)
    score = (model.head(acts)[:, 2] * mask).sum()
    (grads,) = torch.autograd.grad(score, acts)
    raw = torch.relu((grads.mean(dim=(2, 3))[:, :, None, None] * acts.detach()).sum(1))
    assert (result.raw.double() - raw).abs().max() <= 1e-6 * max(1.0, float(raw.abs().max()))
    assert result.targets.tolist() == [2, 2, 2] and result.logits.shape == (3, 4, 16, 16)
    with pytest.raises(ValueError, match="give targets"):
        GradCAM(model, "act").explain(inputs)  # no top-1 class of a segmentation output


def test_methods_command_and_cli_usage_errors(tmp_path):
    from click.testing import CliRunner

    from camscope.cli import main

    listing = CliRunner().invoke(main, ["methods"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "label", "cost"]
    for spec in SPECS:
        row = next(line for line in lines if line.split()[0] == spec.name)
        assert spec.family in row and spec.label in row and spec.paper in row
    (tmp_path / "a.png").write_bytes(b"not decoded before the usage checks")
    base = ["run", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--random-weights"]
    for extra, message in [
        (
            ["--methods", "gradcam", "--rise-masks", "5"],
            "--rise-masks (rise_masks) applies to rise",
        ),
        (["--methods", "gradcam,nope"], "unknown method 'nope'; choose from gradcam"),
        (["--methods", "rise", "--rise-masks", "0"], "--rise-masks: must be >= 1"),
    ]:
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.output and result.output.count("\n") == 1, result.output
