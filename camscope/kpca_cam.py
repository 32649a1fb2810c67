"""pytorch-grad-cam's module path: `camscope.methods.eigen.KPCA_CAM`."""

from camscope.methods.eigen import KPCA_CAM

__all__ = ["KPCA_CAM"]
