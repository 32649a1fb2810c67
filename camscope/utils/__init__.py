"""pytorch-grad-cam's ``pytorch_grad_cam.utils`` under camscope's name.

The same modules and names: `image`, `model_targets`, `reshape_transforms`,
`svd_on_activations`, `find_layers`. Importing this package stays light (OpenCV, SciPy and
scikit-learn are imported by the functions that need them).
"""

from camscope.utils import find_layers, model_targets, reshape_transforms
from camscope.utils.image import deprocess_image
from camscope.utils.svd_on_activations import get_2d_projection

__all__ = [
    "deprocess_image",
    "find_layers",
    "get_2d_projection",
    "model_targets",
    "reshape_transforms",
]
