"""pytorch-grad-cam's module path: `camscope.methods.eigen.EigenGradCAM`.

Solver's sign by default.
"""

from camscope.methods.eigen import EigenGradCAM

__all__ = ["EigenGradCAM"]
