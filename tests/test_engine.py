"""InferenceEngine: every backend gives the eager model's logits; substitutions are said."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import TinyNet

from camscope import engine as engine_module
from camscope.engine import InferenceEngine


def _float64_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import copy

    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double())


@pytest.fixture
def model32(tiny_model):
    return tiny_model.float()


@pytest.fixture
def inputs32(tiny_inputs):
    return tiny_inputs.float()


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript", "eager"])
def test_backends_match_float64_reference_resnet18(backend):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(5, 3, 64, 64)
    engine = InferenceEngine(model, backend=backend)
    engine.prepare(x[:3], expected_passes=1000)
    assert engine.kind == f"{backend} fp32"
    got = engine(x)  # a batch size other than the example's: dynamic batch
    expected = _float64_logits(model, x)
    assert got.dtype == torch.float32 and got.shape == (5, 10)
    assert (got.double() - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert engine.note == ""


def test_auto_prefers_onnxruntime_and_compiles_only_when_it_pays(model32, inputs32):
    many = InferenceEngine(model32)
    many.prepare(inputs32, expected_passes=10_000)
    assert many.kind == "onnxruntime fp32"
    few = InferenceEngine(model32)
    few.prepare(inputs32, expected_passes=3)
    assert few.kind == "eager fp32"
    off = InferenceEngine(model32, jit=False)
    off.prepare(inputs32, expected_passes=10_000)
    assert off.kind == "eager fp32"


def test_auto_falls_back_and_says_so(monkeypatch, caplog, model32, inputs32):
    def broken(*_args, **_kwargs):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(engine_module, "_OnnxRuntimeModule", broken)
    engine = InferenceEngine(model32, jit=True)
    out = engine(inputs32)
    assert engine.kind == "torchscript fp32"
    assert "onnxruntime (ImportError" in engine.note and "running torchscript" in engine.note
    assert "inference engine:" in _warnings(caplog)
    assert torch.allclose(out, model32(inputs32), atol=1e-5)


def test_backend_that_disagrees_is_rejected(monkeypatch, capsys, model32, inputs32):
    class Wrong:
        def __init__(self, model, example):
            self.model = model

        def __call__(self, batch):
            return self.model(batch) + 1.0  # shifted logits: must not pass the check

    monkeypatch.setattr(engine_module, "_OnnxRuntimeModule", Wrong)
    engine = InferenceEngine(model32, jit=True)
    engine(inputs32)
    assert engine.kind == "torchscript fp32"
    assert "differ from the eager model" in engine.note
    capsys.readouterr()


def test_explicit_backend_failure_raises(monkeypatch, model32, inputs32):
    def broken(*_args, **_kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr(engine_module, "_OnnxRuntimeModule", broken)
    engine = InferenceEngine(model32, backend="onnxruntime")
    with pytest.raises(RuntimeError, match="inference backend onnxruntime failed"):
        engine(inputs32)


def test_everything_failing_runs_eagerly_with_note(monkeypatch, caplog, model32, inputs32):
    def broken(*_args, **_kwargs):
        raise RuntimeError("nope")

    monkeypatch.setattr(engine_module, "_OnnxRuntimeModule", broken)
    monkeypatch.setattr(engine_module, "_build_torchscript", broken)
    engine = InferenceEngine(model32, jit=True)
    out = engine(inputs32)
    assert engine.kind == "eager fp32" and "eagerly" in engine.note
    assert "inference engine:" in _warnings(caplog)
    assert torch.equal(out, model32(inputs32))


def test_engine_snapshots_weights_and_leaves_model_untouched():
    torch.manual_seed(1)
    model = TinyNet(width=8).eval()
    x = torch.randn(2, 3, 24, 24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine = InferenceEngine(model, backend="onnxruntime")
    first = engine(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    assert torch.equal(engine(x), first)  # the snapshot, as documented
    assert torch.allclose(InferenceEngine(model, backend="onnxruntime")(x), model(x), atol=1e-4)


def test_engine_follows_torch_thread_count(model32, inputs32, single_thread):
    engine = InferenceEngine(model32, backend="onnxruntime")
    engine(inputs32)
    assert engine._compiled.session.get_session_options().intra_op_num_threads == 1


def test_unknown_backend_raises(model32):
    with pytest.raises(ValueError, match="unknown backend 'tvm'"):
        InferenceEngine(model32, backend="tvm")  # type: ignore[arg-type]


def test_float64_model_is_not_run_by_onnxruntime(tiny_model, tiny_inputs, caplog):
    engine = InferenceEngine(tiny_model, jit=True)
    out = engine(tiny_inputs)
    assert engine.kind == "torchscript fp32" and "float32 models" in engine.note
    assert "inference engine:" in _warnings(caplog)
    assert torch.allclose(out.double(), tiny_model(tiny_inputs), atol=1e-5)


def test_release_keeps_the_description_and_rebuilds_from_current_weights():
    torch.manual_seed(2)
    model = TinyNet(width=8).eval()
    x = torch.randn(2, 3, 24, 24)
    engine = InferenceEngine(model, backend="onnxruntime")
    engine(x)
    engine.release()
    assert engine.kind == "onnxruntime fp32" and engine._compiled is None
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    assert torch.allclose(engine(x), model(x), atol=1e-4)  # rebuilt from the new weights


def _warnings(caplog) -> str:
    """The camscope logger's warnings of the test (what the CLI prints as warning lines)."""
    return "\n".join(
        r.getMessage() for r in caplog.records if r.name == "camscope" and r.levelname == "WARNING"
    )
