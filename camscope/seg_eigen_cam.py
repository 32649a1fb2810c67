"""pytorch-grad-cam's module path: `camscope.methods.eigen.SegEigenCAM`."""

from camscope.methods.eigen import SegEigenCAM

__all__ = ["SegEigenCAM"]
