"""A model's logits, whatever it returns: tensors, tuples, dicts and ``.logits`` objects.

`select_logits` picks the logits out of one output; `as_logits_model` wraps a model in a
transparent `LogitsModel` (same submodules, parameters and layer names) that always returns them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
import torch.fx as fx
from torch import nn

from camscope.errors import ModelError, one_line

__all__ = ["LogitsModel", "OutputSpec", "as_logits_model", "select_logits"]

logger = logging.getLogger("camscope")

OutputSpec = int | str | Callable[[object], torch.Tensor] | None


def select_logits(output: object, spec: OutputSpec = None) -> torch.Tensor:
    """The logits tensor in a model's output.

    ``spec`` None: a tensor as is; else an object's ``.logits`` (HuggingFace ``ModelOutput``),
    a mapping's ``"logits"``, or a tuple's/list's first element (torchvision's aux outputs,
    ``return_dict=False``). An int indexes, a str is a key (mappings) or an attribute name, a
    callable is applied to the output.

    Raises:
        ModelError: the output holds no tensor where ``spec`` points.
    """
    if spec is None:
        if isinstance(output, torch.Tensor | fx.Proxy):
            return output  # type: ignore[return-value]
        if isinstance(output, Mapping) and "logits" in output:
            return output["logits"]
        if hasattr(output, "logits"):
            return output.logits  # type: ignore[attr-defined,no-any-return]
        if isinstance(output, tuple | list) and output:
            return output[0]
        raise ModelError(
            f"the model returns a {type(output).__name__}, not logits; pass output= (an index, "
            "a key, an attribute name or a callable) to pick them"
        )
    try:
        if callable(spec):
            return spec(output)
        if isinstance(spec, str) and not isinstance(output, Mapping):
            return getattr(output, spec)  # type: ignore[no-any-return]
        return output[spec]  # type: ignore[index]
    except (AttributeError, IndexError, KeyError, TypeError) as exc:
        raise ModelError(
            f"output={spec!r} does not pick the logits out of the model's "
            f"{type(output).__name__} output ({one_line(exc)})"
        ) from exc


class LogitsModel(nn.Module):
    """A classifier whose output is the logits tensor, whatever the wrapped model returns.

    Transparent: it shares the wrapped model's submodules, parameters and buffers (same
    objects), so layer names (``layer4.2``), ``state_dict`` keys and attributes are the
    model's own, and torch.fx traces straight through it. Built by `as_logits_model`.
    """

    def __init__(self, model: nn.Module, output: OutputSpec = None) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)
        self._modules = model._modules
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.output = output
        self.training = model.training
        self._said_tuple = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.inner.forward(x)
        if self.output is None and isinstance(out, tuple | list) and not self._said_tuple:
            self._said_tuple = True
            logger.warning(
                "the model returns a %s; using its first element as the logits (output= picks "
                "another)",
                type(out).__name__,
            )
        logits = select_logits(out, self.output)
        if not isinstance(logits, torch.Tensor | fx.Proxy):
            raise ModelError(
                f"the model's logits are a {type(logits).__name__}, not a tensor; pass output="
            )
        if isinstance(logits, torch.Tensor) and logits.dim() == 1:
            return logits[:, None]  # a regression model's (N,) output: one output column
        return logits

    def train(self, mode: bool = True) -> LogitsModel:  # noqa: D102
        super().train(mode)
        self.inner.training = mode
        return self

    def __getattr__(self, name: str) -> object:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("inner")
            if inner is None:
                raise
            return getattr(inner, name)


def as_logits_model(model: nn.Module, output: OutputSpec = None) -> LogitsModel:
    """Wrap ``model`` so that it returns a logits tensor (`LogitsModel`, `select_logits`).

    Layer names stay the model's own. A `LogitsModel` is returned as is when ``output`` is None
    or the same.

    Example::

        >>> import torch
        >>> class Tuple(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return {"logits": self.fc(x), "hidden": x}
        >>> as_logits_model(Tuple())(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    if isinstance(model, LogitsModel):
        if output is None or output is model.output:
            return model
        return LogitsModel(model.inner, output)
    return LogitsModel(model, output)
