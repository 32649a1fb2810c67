"""pytorch-grad-cam's module path: `camscope.methods.activation.FEM`."""

from camscope.methods.activation import FEM

__all__ = ["FEM"]
