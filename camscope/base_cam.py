"""pytorch-grad-cam's module path: `camscope.methods.base.BaseCAM`.

A subclass may implement pytorch-grad-cam's ``get_cam_weights`` instead of camscope's
``weights``.
"""

from camscope.methods.base import BaseCAM

__all__ = ["BaseCAM"]
