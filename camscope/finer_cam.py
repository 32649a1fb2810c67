"""pytorch-grad-cam's module path: `camscope.methods.gradient.FinerCAM`."""

from camscope.methods.gradient import FinerCAM

__all__ = ["FinerCAM"]
