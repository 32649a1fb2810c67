"""camscope: paper-faithful, fast class activation maps, measured.

Public API (pytorch-grad-cam's class and target names: switching is an import line)::

    from camscope import GradCAM, GradCAMPlusPlus, ScoreCAM, ClassifierOutputTarget
    from camscope import explain, load_model, wrap_module

    with GradCAM(model, target_layers=[model.layer4[-1]]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])
"""

from camscope._version import __version__
from camscope.activations_and_gradients import ActivationsAndGradients
from camscope.layers import resolve_layer
from camscope.methods import (
    METHOD_CLASSES,
    METHODS,
    BaseCAM,
    BinaryClassifierOutputTarget,
    CAMResult,
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    DeepFeatureFactorization,
    FasterRCNNBoxScoreTarget,
    FinerWeightedTarget,
    GuidedBackpropReLUModel,
    RawScoresOutputTarget,
    SemanticSegmentationTarget,
    SoftmaxOutputTarget,
    get_method,
    run_dff_on_image,
)
from camscope.methods.ablation_layers import (
    AblationLayer,
    AblationLayerFasterRCNN,
    AblationLayerVit,
)
from camscope.models import LoadedModel, load_model, wrap_module

# The method classes come from the registry (`camscope.methods.METHOD_CLASSES`): a new method
# is exported here without this file naming it.
globals().update(METHOD_CLASSES)

__all__ = [
    *METHOD_CLASSES,
    "DeepFeatureFactorization",
    "run_dff_on_image",
    "GuidedBackpropReLUModel",
    "METHODS",
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "ActivationsAndGradients",
    "BaseCAM",
    "BinaryClassifierOutputTarget",
    "CAMResult",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "LoadedModel",
    "RawScoresOutputTarget",
    "RunResult",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
    "__version__",
    "explain",
    "get_method",
    "load_model",
    "resolve_layer",
    "wrap_module",
]


def __getattr__(name: str):  # lazy: the run stages pull in pyarrow/matplotlib only when used
    """``explain``/``RunResult`` (the run stages) and ``utils`` load on first use."""
    if name in ("explain", "RunResult"):
        from camscope import run

        return getattr(run, name)
    if name == "utils":
        import importlib

        return importlib.import_module("camscope.utils")
    raise AttributeError(f"module 'camscope' has no attribute {name!r}")
