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

# The family modules: importing one registers its methods (`registry.register`). A method added
# to a family is exported below from the registry: this file does not name it.
from camscope.methods import (  # noqa: F401
    activation,
    eigen,
    gradient,
    guided,
    meta,
    perturbation,
    sobel,
)
from camscope.methods.base import BaseCAM, CAMContext, CAMResult, normalise_maps
from camscope.methods.factorization import DeepFeatureFactorization, run_dff_on_image
from camscope.methods.guided import GuidedBackpropReLUModel
from camscope.methods.registry import (
    METHODS,
    MethodSpec,
    OptionSpec,
    build_cam,
    get_method,
    method_options,
)
from camscope.methods.sobel import sobel_cam
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

#: Every registered method's class by its class name (``GradCAM``, ``ScoreCAM``, ...): THE list
#: of method exports, here and in `camscope` (a class with ``@register`` appears in both).
METHOD_CLASSES: dict[str, type] = {spec.cls.__name__: spec.cls for spec in METHODS.values()}
globals().update(METHOD_CLASSES)

__all__ = [
    *METHOD_CLASSES,
    "METHOD_CLASSES",
    "DeepFeatureFactorization",
    "run_dff_on_image",
    "GuidedBackpropReLUModel",
    "sobel_cam",
    "METHODS",
    "BaseCAM",
    "CAMContext",
    "CAMResult",
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "MethodSpec",
    "OptionSpec",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
    "Targets",
    "build_cam",
    "get_method",
    "method_options",
    "normalise_maps",
]
