"""pytorch-grad-cam's module path: `camscope.methods.gradient.GradCAM`."""

from camscope.methods.gradient import GradCAM

__all__ = ["GradCAM"]
