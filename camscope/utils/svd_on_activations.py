"""pytorch-grad-cam's ``utils.svd_on_activations``: first principal component projections.

``get_2d_projection`` is `camscope.methods.base.first_component` with pytorch-grad-cam's
sign (the solver's); none of these functions changes the caller's array (NaN counts as 0).

Example::

    >>> import numpy as np
    >>> get_2d_projection(np.random.rand(2, 8, 3, 4).astype(np.float32)).shape
    (2, 3, 4)
"""

from __future__ import annotations

import numpy as np
import torch

from camscope.methods.base import first_component
from camscope.methods.eigen import kernel_projection, largest_magnitude_positive

__all__ = [
    "get_2d_projection",
    "get_2d_projection_kernel",
    "get_2d_projection_with_sign_correction",
]


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w) float32: projection on the first principal component."""
    batch = torch.from_numpy(np.array(activation_batch, dtype=np.float32))
    return first_component(batch, "pytorch-grad-cam").numpy()


def get_2d_projection_kernel(
    activation_batch: np.ndarray, kernel: str = "sigmoid", gamma: float | None = None
) -> np.ndarray:
    """(N, C, h, w) -> (N, h, w) float32: the first kernel-PCA component.

    KPCA-CAM's projection (`camscope.methods.eigen.kernel_projection`, scikit-learn's kernels
    and sign rule).
    """
    batch = torch.from_numpy(np.array(activation_batch))
    return kernel_projection(batch, kernel, gamma).float().numpy()


def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray:
    """`get_2d_projection`, each map negated when |min| > |max| (Seg-Eigen-CAM's eq. 13).

    Chung & Ying, Seg-Eigen-CAM, Appl. Sci. 2025, https://doi.org/10.3390/app15137562
    (`camscope.methods.eigen.largest_magnitude_positive`).
    """
    projections = torch.from_numpy(get_2d_projection(activation_batch))
    return largest_magnitude_positive(projections).numpy()
