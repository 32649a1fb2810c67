"""The errors every layer of camscope shares, and the one-line form of an exception.

A leaf module (it imports nothing of camscope), so that `camscope.layers` and `camscope.models`
raise the same classes without importing each other.
"""

from __future__ import annotations

__all__ = ["LayerError", "ModelError", "one_line"]


class ModelError(Exception):
    """A model, its weights or a layer could not be used; the message is one line."""


class LayerError(ModelError):
    """A layer path does not name a module of the model, or the layer is not a spatial map."""


def one_line(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (its type name if it says nothing)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
