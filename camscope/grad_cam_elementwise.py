"""pytorch-grad-cam's module path: `camscope.methods.gradient.GradCAMElementWise`."""

from camscope.methods.gradient import GradCAMElementWise

__all__ = ["GradCAMElementWise"]
