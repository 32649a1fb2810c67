"""pytorch-grad-cam's module path: `camscope.methods.gradient.HiResCAM`."""

from camscope.methods.gradient import HiResCAM

__all__ = ["HiResCAM"]
