"""pytorch-grad-cam's module path: `camscope.methods.meta.SESS` and its window helpers.

Example::

    >>> window_starts(10, 4, 6)
    [0, 4]
    >>> sliding_window(6, 10, 4, 6)
    [(0, 0), (4, 0)]
"""

from __future__ import annotations

from camscope.methods import meta
from camscope.methods.meta import SESS

__all__ = ["SESS", "sliding_window", "window_starts"]


def window_starts(length: int, step_size: int, window_size: int) -> list[int]:
    """Starts of the windows along one side (`camscope.methods.meta.window_starts`)."""
    return meta.window_starts(length, step_size, window_size)


def sliding_window(
    height: int, width: int, step_size: int, window_size: int
) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the windows covering a ``height`` x ``width`` image."""
    return [
        (x, y)
        for y in window_starts(height, step_size, window_size)
        for x in window_starts(width, step_size, window_size)
    ]
