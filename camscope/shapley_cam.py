"""pytorch-grad-cam's module path: `camscope.methods.gradient.ShapleyCAM`."""

from camscope.methods.gradient import ShapleyCAM

__all__ = ["ShapleyCAM"]
