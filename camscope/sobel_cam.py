"""pytorch-grad-cam's module path: `camscope.methods.sobel.sobel_cam`."""

from camscope.methods.sobel import sobel_cam

__all__ = ["sobel_cam"]
