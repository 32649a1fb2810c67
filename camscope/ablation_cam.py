"""pytorch-grad-cam's module path: `camscope.methods.perturbation.AblationCAM`.

pytorch-grad-cam's ablation value by default.
"""

from camscope.methods.ablation_layers import AblationLayer
from camscope.methods.perturbation import AblationCAM
from camscope.utils.find_layers import replace_layer_recursive

__all__ = ["AblationCAM", "AblationLayer", "replace_layer_recursive"]
