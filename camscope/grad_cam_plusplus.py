"""pytorch-grad-cam's module path: `camscope.methods.gradient.GradCAMPlusPlus`."""

from camscope.methods.gradient import GradCAMPlusPlus

__all__ = ["GradCAMPlusPlus"]
