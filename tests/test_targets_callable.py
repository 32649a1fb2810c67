"""Any output kind: multi-label (sigmoid), regression (N,) outputs, callable targets (API, CLI).

References are written out: Grad-CAM by hand in float64 from hooked activations and
``torch.autograd.grad``.
"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import TinyNet
from run_helpers import MODEL, make_images

from camscope import GradCAM
from camscope.cli import main
from camscope.methods.targets import NamedTarget, import_target
from camscope.run import results

pytestmark = pytest.mark.usefixtures("single_thread")


class Regressor(torch.nn.Module):
    """TinyNet's trunk with one output per image, shape (N,) (no class axis)."""

    def __init__(self):
        super().__init__()
        self.net = TinyNet(num_classes=1)

    def forward(self, x):
        return self.net(x)[:, 0]


def _gradcam_by_hand(model, layer, x, score_fn):
    """ReLU(sum_k mean(dS/dA_k) A_k) in float64, S = score_fn(output) summed over images."""
    model = model.double()
    seen = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out))
    try:
        out = model(x.double())
        (grads,) = torch.autograd.grad(score_fn(out).sum(), seen["a"])
    finally:
        handle.remove()
        model.float()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * seen["a"]).sum(dim=1)).detach()


def test_regression_output_and_callable_targets_against_by_hand():
    torch.manual_seed(0)
    model = Regressor().eval()
    x = torch.randn(3, 3, 16, 16)
    layer = model.net.act3
    cam = GradCAM(model, [layer])
    up = cam.explain(x)  # targets None: the one output column (the predicted value)
    assert up.logits.shape == (3, 1)
    expected = _gradcam_by_hand(model, layer, x, lambda out: out)
    assert torch.allclose(up.raw.double(), expected, atol=1e-5)
    down = cam.explain(x, targets=lambda row: -row[0])  # what lowers the prediction
    expected = _gradcam_by_hand(model, layer, x, lambda out: -out)
    assert torch.allclose(down.raw.double(), expected, atol=1e-5)


def test_multilabel_sigmoid_target_same_map_as_its_logit():
    torch.manual_seed(1)
    model = TinyNet(num_classes=6).eval()
    x = torch.randn(2, 3, 16, 16)
    cam = GradCAM(model, [model.act3])
    logit = cam(x, targets=[4, 4])
    prob = cam(x, targets=lambda row: torch.sigmoid(row[4]))  # one callable for every image
    # d sigmoid(z)/dA = sigmoid'(z) dz/dA with sigmoid'(z) > 0: the normalised map is the same
    assert torch.allclose(logit, prob, atol=1e-5)


def test_import_target_errors_are_one_line():
    with pytest.raises(ValueError, match="cannot import"):
        import_target("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match="cannot import"):
        import_target("math:no_such_function")
    with pytest.raises(ValueError, match="not callable"):
        import_target("math:pi")
    target = import_target("torch:sum")
    assert isinstance(target, NamedTarget) and str(target) == "torch:sum"


def test_cli_module_function_target(tmp_path, monkeypatch):
    (tmp_path / "mytargets.py").write_text(
        "import torch\n\ndef third(row):\n    return torch.sigmoid(row[3])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    base = ["run", str(tmp_path / "in"), *MODEL, "-m", "gradcam", "--target", "mytargets:third"]
    result = CliRunner().invoke(main, [*base, "-o", str(out), "--sanity-images", "2"])
    assert result.exit_code == 0, result.output
    rows = results.read_table([out]).to_pylist()
    assert len(rows) == 3
    assert {r["target_name"] for r in rows} == {"mytargets:third"}
    assert {r["target_index"] for r in rows} == {-1}
    assert "mytargets:third" in str(results.read_run(out)["settings"])
    refused = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "m"), "--metrics"])
    assert refused.exit_code == 2 and "--metrics needs a class target" in refused.output
    missing = [*base[:-1], "mytargets:nothing", "-o", str(tmp_path / "x")]
    bad = CliRunner().invoke(main, missing)
    assert bad.exit_code == 2 and "cannot import" in bad.output
