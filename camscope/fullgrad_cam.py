"""pytorch-grad-cam's module path: `camscope.methods.gradient.FullGrad`."""

from camscope.methods.gradient import FullGrad

__all__ = ["FullGrad"]
