"""Deep Feature Factorization (Collins et al., ECCV 2018): concepts, not a class map.

DFF factorises a layer's activations with non-negative matrix factorisation: the channels x
positions matrix of a batch, made non-negative by subtracting each channel's minimum, is
``W H`` with k components. Each component is a *concept*: a C-dimensional direction in the
layer's feature space (a column of W, the channel minimum added back), and its *explanation*
is a heatmap over the positions of every image (a row of H). A concept can be classified by
the model's head (``computation_on_concepts``), which names what the network sees where.

This is not a CAM method: it explains no target, gives k maps per image and is not in the
method registry (nor `camscope run`); it lives here because it reads a layer's activations as
the methods do (any layer `camscope.layers.spatial_view` reads, or a ``reshape_transform``).
scikit-learn's NMF (``init="random"``, ``random_state=0``) solves the factorisation, as in
pytorch-grad-cam, so that concepts and heatmaps are pytorch-grad-cam's; scikit-learn is needed
for DFF only (``pip install scikit-learn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from camscope.methods.base import BaseCAM, normalise_maps

__all__ = ["DeepFeatureFactorization", "dff", "run_dff_on_image"]


def dff(activations: np.ndarray, n_components: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Factorise activations (N, C, h, w): concepts (C, k) and explanations (N, k, h, w).

    NaNs count as 0; each channel's minimum over the batch is subtracted before the NMF and
    added back to the concepts (pytorch-grad-cam's ``dff``).
    """
    try:
        from sklearn.decomposition import NMF
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            'Deep Feature Factorization needs scikit-learn: pip install "camscope[compat]"'
        ) from exc
    n, c, h, w = activations.shape
    matrix = np.nan_to_num(activations.transpose((1, 0, 2, 3)), nan=0.0).reshape(c, -1)
    offset = matrix.min(axis=-1)
    nmf = NMF(n_components=n_components, init="random", random_state=0)
    weights = nmf.fit_transform(matrix - offset[:, None])
    concepts = weights + offset[:, None]
    explanations = nmf.components_.reshape(n_components, n, h, w).transpose((1, 0, 2, 3))
    return concepts, explanations


class DeepFeatureFactorization(BaseCAM):
    """Deep Feature Factorization (Collins et al., ECCV 2018, https://arxiv.org/abs/1806.10206).

    ``DeepFeatureFactorization(model, target_layer, reshape_transform=None,
    computation_on_concepts=None)(input_tensor, n_components=16)`` returns ``(concepts,
    explanations)``, or ``(concepts, explanations, concept_outputs)`` with a
    ``computation_on_concepts`` (e.g. the model's classifier head, applied to the (k, C)
    concepts): concepts (C, k) NumPy, explanations a list of one (k, H, W) float32 array per
    image, each heatmap min-max normalised and resized (bilinear) to the input. As
    pytorch-grad-cam's class of the same name (the module docstring says what DFF is). The
    model runs in eval mode for the call, its own mode restored after.

    Example::

        >>> import torch, torchvision
        >>> model = torchvision.models.resnet18().eval()
        >>> concepts, maps = DeepFeatureFactorization(model, model.layer4)(
        ...     torch.rand(2, 3, 64, 64), n_components=3)
        >>> concepts.shape, len(maps), maps[0].shape
        ((512, 3), 2, (3, 64, 64))
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: Any,
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        computation_on_concepts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(model, target_layer, reshape_transform)
        self.computation_on_concepts = computation_on_concepts

    def activations(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """The target layer's output as a map (N, C, h, w), from one forward pass."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                output, _ = self._features(0, input_tensor)
                return self._view(0, output, input_tensor).to_map(output)
        finally:
            self.model.train(was_training)

    def __call__(self, input_tensor: torch.Tensor, n_components: int = 16):  # type: ignore[override]
        """Concepts, per-image explanations (and the concepts' outputs); see the class."""
        size = (int(input_tensor.shape[-2]), int(input_tensor.shape[-1]))
        acts = self.activations(input_tensor).detach().float().cpu().numpy()
        concepts, explanations = dff(acts, n_components=n_components)
        processed = [
            normalise_maps(torch.from_numpy(np.float32(e)), size)[0].numpy() for e in explanations
        ]
        if self.computation_on_concepts is None:
            return concepts, processed
        with torch.no_grad():
            tensors = torch.from_numpy(np.float32(concepts).transpose((1, 0)))
            outputs = self.computation_on_concepts(tensors).cpu().numpy()
        return concepts, processed, outputs

    def weights(self, ctx: Any) -> torch.Tensor:  # noqa: D102 - not a CAM: no weights
        raise TypeError("DeepFeatureFactorization gives concepts, not a class map: call it")


def run_dff_on_image(
    model: nn.Module,
    target_layer: nn.Module,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    img_pil: Any,
    img_tensor: torch.Tensor,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """One image's DFF picture: the image beside its concepts, labelled by ``classifier``.

    pytorch-grad-cam's helper: the concepts' classifier outputs (softmax) name each concept by
    its ``top_k`` labels from ``model.config.id2label`` (a Hugging Face model); returns the
    image and the colour-coded concept heatmaps side by side, (H, 2W, 3) uint8.
    """
    from camscope.utils.image import create_labels_legend, show_factorization_on_image

    rgb = np.array(img_pil) / 255
    factorization = DeepFeatureFactorization(model, target_layer, reshape_transform, classifier)
    _, explanations, outputs = factorization(img_tensor[None, :], n_components)
    scores = torch.softmax(torch.from_numpy(outputs), dim=-1).numpy()
    labels = create_labels_legend(scores, labels=model.config.id2label, top_k=top_k)
    picture = show_factorization_on_image(
        rgb, explanations[0], image_weight=0.3, concept_labels=labels
    )
    return np.hstack((np.array(img_pil), picture))
