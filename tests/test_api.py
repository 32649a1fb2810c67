"""The curated public API: pytorch-grad-cam's names import from ``camscope`` itself."""

from __future__ import annotations

import subprocess
import sys

import camscope

PGC_NAMES = (
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "GradCAMElementWise",
    "LayerCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "AblationCAM",
    "ScoreCAM",
    "RandomCAM",
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "BinaryClassifierOutputTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
)


def test_pytorch_grad_cam_names_import_from_camscope():
    missing = [n for n in PGC_NAMES if not hasattr(camscope, n)]
    assert not missing
    assert set(PGC_NAMES) <= set(camscope.__all__)


def test_every_registered_method_class_is_public():
    classes = {spec.cls.__name__ for spec in camscope.METHODS.values()}
    assert classes <= set(camscope.__all__), classes - set(camscope.__all__)


def test_import_is_light():
    code = (
        "import sys, camscope; from camscope import GradCAMPlusPlus; "
        "print(sorted(m for m in ('ray', 'pyarrow', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
