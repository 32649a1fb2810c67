"""pytorch-grad-cam's ``ActivationsAndGradients``: record a layer's outputs and gradients.

camscope's CAMs do not need it (`camscope.methods.base.BaseCAM` splits the network and keeps
no hooks between calls); it is here for code that uses it directly. Call `release` (or use
``with``) to remove the hooks.

Example::

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> with ActivationsAndGradients(model, [model[1]], None) as recorder:
    ...     recorder(torch.randn(1, 3, 5, 5)).sum().backward()
    ...     [a.shape for a in recorder.activations], [g.shape for g in recorder.gradients]
    ([torch.Size([1, 4, 3, 3])], [torch.Size([1, 4, 3, 3])])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["ActivationsAndGradients"]


class ActivationsAndGradients:
    """Forward hooks on ``target_layers``: their outputs and, after backward, gradients.

    Args:
        model: the model.
        target_layers: modules whose outputs are recorded.
        reshape_transform: applied to outputs and gradients when ``detach`` is True.
        detach: store detached CPU copies (True) or the tensors themselves.

    Attributes:
        activations: one tensor per layer, in forward order (reset by each call).
        gradients: one tensor per layer, in the same order (filled during backward).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None,
        detach: bool = True,
    ) -> None:
        self.model = model
        self.reshape_transform = reshape_transform
        self.detach = detach
        self.activations: list[torch.Tensor] = []
        self.gradients: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._record) for layer in target_layers]

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.detach:
            return tensor
        if self.reshape_transform is not None:
            tensor = self.reshape_transform(tensor)
        return tensor.cpu().detach()

    def _record(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.activations.append(self._keep(output))
        if isinstance(output, torch.Tensor) and output.requires_grad:
            # gradients arrive in reverse order of the layers
            output.register_hook(lambda g: self.gradients.insert(0, self._keep(g)))

    def __call__(self, x: torch.Tensor) -> Any:
        """Run the model on ``x`` with fresh records."""
        self.activations, self.gradients = [], []
        return self.model(x)

    def __enter__(self) -> ActivationsAndGradients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def clear(self) -> None:
        """Forget the recorded tensors."""
        self.activations.clear()
        self.gradients.clear()

    def release(self) -> None:
        """Forget the records and remove the hooks."""
        self.clear()
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
