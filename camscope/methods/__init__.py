"""Class activation map methods, one class each, over a shared `BaseCAM`.

Families: `camscope.methods.gradient`, `camscope.methods.eigen`,
`camscope.methods.activation`, `camscope.methods.guided`, `camscope.methods.perturbation`,
`camscope.methods.meta`, `camscope.methods.sobel` (an edge-detector baseline); Deep Feature
Factorization (concepts, not a class map, unregistered) in `camscope.methods.factorization`.
Each method registers itself in `METHODS` (`camscope.methods.registry`), which the CLI, run
metadata and report read.

Usage::

    >>> import torch, torchvision
    >>> from camscope.methods import GradCAM, ClassifierOutputTarget
    >>> model = torchvision.models.resnet18().eval()
    >>> with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
    ...     maps = cam(input_tensor=torch.randn(1, 3, 64, 64), targets=[ClassifierOutputTarget(3)])
    >>> maps.shape
    torch.Size([1, 64, 64])
"""

from __future__ import annotations

from camscope.methods.activation import FEM
from camscope.methods.base import BaseCAM, CAMContext, CAMResult, normalise_maps
from camscope.methods.eigen import KPCA_CAM, EigenCAM, EigenGradCAM, SegEigenCAM
from camscope.methods.factorization import DeepFeatureFactorization, run_dff_on_image
from camscope.methods.gradient import (
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ShapleyCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
)
from camscope.methods.guided import GuidedBackprop, GuidedBackpropReLUModel, GuidedGradCAM
from camscope.methods.meta import SESS, RefineCAM
from camscope.methods.perturbation import ISCAM, RISE, SSCAM, AblationCAM, RandomCAM, ScoreCAM
from camscope.methods.registry import (
    METHODS,
    MethodSpec,
    OptionSpec,
    build_cam,
    get_method,
    method_options,
)
from camscope.methods.sobel import SobelCAM, sobel_cam
from camscope.methods.targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    FasterRCNNBoxScoreTarget,
    FinerWeightedTarget,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
    SoftmaxOutputTarget,
    Targets,
)

__all__ = [
    "SobelCAM",
    "sobel_cam",
    "DeepFeatureFactorization",
    "run_dff_on_image",
    "SESS",
    "RefineCAM",
    "GuidedBackprop",
    "GuidedBackpropReLUModel",
    "GuidedGradCAM",
    "FinerCAM",
    "ShapleyCAM",
    "FEM",
    "KPCA_CAM",
    "SegEigenCAM",
    "ISCAM",
    "METHODS",
    "RISE",
    "SSCAM",
    "RandomCAM",
    "AblationCAM",
    "BaseCAM",
    "BinaryClassifierOutputTarget",
    "CAMContext",
    "CAMResult",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "GradCAM",
    "MethodSpec",
    "OptionSpec",
    "RawScoresOutputTarget",
    "ScoreCAM",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
    "Targets",
    "build_cam",
    "get_method",
    "method_options",
    "normalise_maps",
]
