"""pytorch-grad-cam's module path: `camscope.methods.gradient.LayerCAM`."""

from camscope.methods.gradient import LayerCAM

__all__ = ["LayerCAM"]
