"""pytorch-grad-cam's module path: `camscope.methods.eigen.EigenCAM` (solver's sign by default)."""

from camscope.methods.eigen import EigenCAM

__all__ = ["EigenCAM"]
