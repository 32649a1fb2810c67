"""The errors every layer of camscope shares, and THE one-line form of an exception.

A leaf module (it imports nothing of camscope), so that `camscope.layers` and `camscope.models`
raise the same classes without importing each other.
"""

from __future__ import annotations

__all__ = ["LayerError", "ModelError", "one_line"]


class ModelError(Exception):
    """A model, its weights or a layer could not be used; the message is one line."""


class LayerError(ModelError):
    """A layer path does not name a module of the model, or the layer is not a spatial map."""


def one_line(exc: BaseException | str, limit: int | None = 300, *, typed: bool = False) -> str:
    r"""An exception (or a message) as one line: camscope's one formatter of causes.

    Whitespace runs and newlines become one space; an exception that says nothing is its type
    name; ``typed`` puts the type name first (``OSError: ...``); text over ``limit`` characters
    (None: no limit) is cut and ends in ``...``.

    Example::

        >>> one_line(ValueError("bad\n  value")), one_line(KeyError()), one_line("a " * 4, 5)
        ('bad value', 'KeyError', 'a ...')
        >>> one_line(OSError("disk full"), typed=True)
        'OSError: disk full'
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, BaseException):
        name = type(exc).__name__
        text = f"{name}: {text}" if typed and text else text or name
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."
