"""pytorch-grad-cam's module path: `camscope.methods.ablation_layers`."""

from camscope.methods.ablation_layers import (
    AblationLayer,
    AblationLayerFasterRCNN,
    AblationLayerVit,
)

__all__ = ["AblationLayer", "AblationLayerFasterRCNN", "AblationLayerVit"]
