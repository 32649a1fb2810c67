"""pytorch-grad-cam's module path: `camscope.methods.meta.RefineCAM`."""

from camscope.methods.meta import RefineCAM

__all__ = ["RefineCAM"]
