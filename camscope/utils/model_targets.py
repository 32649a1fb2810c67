"""pytorch-grad-cam's ``utils.model_targets``: camscope's targets (`camscope.methods.targets`).

Example::

    >>> import torch
    >>> from camscope.utils.model_targets import ClassifierOutputTarget
    >>> ClassifierOutputTarget(1)(torch.tensor([0.5, 2.0]))
    tensor(2.)
"""

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
)

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
]
