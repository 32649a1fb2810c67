"""pytorch-grad-cam's module path: `camscope.methods.gradient.XGradCAM`."""

from camscope.methods.gradient import XGradCAM

__all__ = ["XGradCAM"]
