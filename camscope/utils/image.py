"""pytorch-grad-cam's ``utils.image``: pre/post-processing and overlays, same names and results.

``scale_cam_image`` resizes as camscope's maps are resized (bilinear, half-pixel centres, which
is what OpenCV's ``INTER_LINEAR`` computes). The overlays use OpenCV colour maps, as
pytorch-grad-cam's do: ``show_cam_on_image`` and ``show_factorization_on_image`` need OpenCV
(``pip install opencv-python-headless``); everything else needs only NumPy and torch. Maps may
be NumPy arrays or torch tensors (camscope's CAMs return tensors).

Example::

    >>> import numpy as np
    >>> scale_cam_image(np.random.rand(2, 7, 7), (32, 24)).shape
    (2, 24, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "create_labels_legend",
    "deprocess_image",
    "preprocess_image",
    "scale_accross_batch_and_channels",
    "scale_cam_image",
    "show_cam_on_image",
    "show_factorization_on_image",
]

COLORMAP_JET = 2  # cv2.COLORMAP_JET, so that the default needs no OpenCV import


def _numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'this pytorch-grad-cam overlay needs OpenCV: pip install "camscope[compat]"'
        ) from exc
    return cv2


def preprocess_image(
    img: np.ndarray, mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)
) -> torch.Tensor:
    """(H, W, 3) image -> normalised (1, 3, H, W) tensor (uint8 is scaled to [0, 1] first)."""
    from torchvision.transforms.functional import normalize, to_tensor

    return normalize(to_tensor(np.array(img)), mean=list(mean), std=list(std)).unsqueeze(0)


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Standardise, scale to 0.1 std around 0.5, clip, uint8 (guided back-propagation images)."""
    img = _numpy(img)
    img = (img - np.mean(img)) / (np.std(img) + 1e-5)
    return np.uint8(np.clip(img * 0.1 + 0.5, 0, 1) * 255)


def show_cam_on_image(
    img: np.ndarray,
    mask: Any,
    use_rgb: bool = False,
    colormap: int = COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlay a map in [0, 1] on a float image in [0, 1] as an OpenCV heat map (uint8).

    Args:
        img: (H, W, 3) float image in [0, 1], RGB or BGR.
        mask: (H, W) map in [0, 1] (NumPy or torch).
        use_rgb: the heat map in RGB (True, for an RGB ``img``) or OpenCV's BGR.
        colormap: an OpenCV colour map.
        image_weight: the result is ``image_weight * img + (1 - image_weight) * heatmap``,
            divided by its maximum.
    """
    cv2 = _cv2()
    heatmap = cv2.applyColorMap(np.uint8(255 * _numpy(mask)), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255
    if np.max(img) > 1:
        raise ValueError("The input image should np.float32 in the range [0, 1]")
    if not 0 <= image_weight <= 1:
        raise ValueError(f"image_weight should be in the range [0, 1]. Got: {image_weight}")
    cam = (1 - image_weight) * heatmap + image_weight * img
    return np.uint8(255 * (cam / np.max(cam)))


def create_labels_legend(
    concept_scores: np.ndarray, labels: dict[int, str], top_k: int = 2
) -> list[str]:
    """One legend text per concept: its ``top_k`` categories as ``label:score`` lines."""
    concept_scores = _numpy(concept_scores)
    top = np.argsort(concept_scores, axis=1)[:, ::-1][:, :top_k]
    legends = []
    for concept, categories in enumerate(top):
        lines = [
            f"{','.join(labels[c].split(',')[:3])}:{concept_scores[concept, c]:.2f}"
            for c in categories
        ]
        legends.append("\n".join(lines))
    return legends


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: list[np.ndarray] | None = None,
    image_weight: float = 0.5,
    concept_labels: list | None = None,
) -> np.ndarray:
    """Colour each pixel by its strongest concept (DFF), brightness = that concept's map.

    Args:
        img: (H, W, 3) float RGB image in [0, 1].
        explanations: (K, H, W) concept maps in [0, 1]. Each map is zeroed (in place, as
            pytorch-grad-cam does) where another concept is stronger.
        colors: K RGB(A) colours in [0, 1] (default: matplotlib's ``gist_rainbow``).
        image_weight: weight of the image in the blend.
        concept_labels: K legend texts; if given, a legend is drawn to the right.
    """
    cv2 = _cv2()
    k = explanations.shape[0]
    if colors is None:
        from matplotlib import colormaps

        cmap = colormaps["gist_rainbow"]
        colors = [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / k)]
    strongest = explanations.argmax(axis=0)
    masks = []
    for i in range(k):
        explanation = explanations[i]
        explanation[strongest != i] = 0
        hsv = np.empty((img.shape[0], img.shape[1], 3))
        hsv[:] = colors[i][:3]
        hsv = cv2.cvtColor(np.uint8(hsv * 255), cv2.COLOR_RGB2HSV)
        hsv[:, :, 2] = np.uint8(255 * explanation)
        masks.append(np.float32(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)) / 255)
    mask = np.sum(np.float32(masks), axis=0)
    result = np.uint8((img * image_weight + mask * (1 - image_weight)) * 255)
    if concept_labels is not None:
        result = np.hstack((result, _legend(result.shape[:2], colors, concept_labels, k)))
    return result


def _legend(size: tuple[int, int], colors: list, labels: list, k: int) -> np.ndarray:
    """An image of ``size`` with a matplotlib legend of the ``k`` concepts."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cv2 = _cv2()
    px = 1 / plt.rcParams["figure.dpi"]
    fig = plt.figure(figsize=(size[1] * px, size[0] * px))
    try:
        plt.rcParams["legend.fontsize"] = int(14 * size[0] / 256 / max(1, k / 6))
        lines = [Line2D([0], [0], color=colors[i], lw=5 * size[0] / 256) for i in range(k)]
        plt.legend(lines, labels, mode="expand", fancybox=True, shadow=True)
        plt.tight_layout(pad=0, w_pad=0, h_pad=0)
        plt.axis("off")
        fig.canvas.draw()
        data = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig=fig)
    return cv2.resize(data, (size[1], size[0]))


def scale_cam_image(cam: Any, target_size: Sequence[int] | None = None) -> np.ndarray:
    """Min-max each map (``/ (max + 1e-7)``), then resize to ``target_size`` = (W, H[, D]).

    Returns float32 NumPy, (N, H, W) for 2-D maps.
    """
    result = []
    for img in _numpy(cam):
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            img = _resize(np.float32(img), tuple(target_size))
        result.append(img)
    return np.float32(result)


def _resize(img: np.ndarray, target_size: tuple[int, ...]) -> np.ndarray:
    """Resize one map: 2-D bilinear (half-pixel centres); 3-D by spline ``zoom`` (SciPy)."""
    if img.ndim > 2:
        from scipy.ndimage import zoom

        return zoom(img, [t / s for s, t in zip(img.shape, target_size[::-1], strict=False)])
    size = (int(target_size[1]), int(target_size[0]))
    if img.shape == size:
        return img
    up = F.interpolate(torch.from_numpy(img)[None, None], size, mode="bilinear")
    return up[0, 0].numpy()


def scale_accross_batch_and_channels(tensor: Any, target_size: Sequence[int]) -> np.ndarray:
    """`scale_cam_image` of every (image, channel) map: (N, C, h, w) -> (N, C, H, W)."""
    tensor = _numpy(tensor)
    n, c = tensor.shape[:2]
    scaled = scale_cam_image(tensor.reshape(n * c, *tensor.shape[2:]), target_size)
    return scaled.reshape(n, c, target_size[1], target_size[0])
