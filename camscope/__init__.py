"""camscope: paper-faithful, fast class activation maps, measured.

Public API::

    from camscope import GradCAM, AblationCAM, ScoreCAM, explain, load_model
"""

from camscope._version import __version__
from camscope.methods import METHODS, AblationCAM, BaseCAM, CAMResult, GradCAM, ScoreCAM
from camscope.models import LoadedModel, load_model, resolve_layer

__all__ = [
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "GradCAM",
    "LoadedModel",
    "RunResult",
    "ScoreCAM",
    "__version__",
    "explain",
    "load_model",
    "resolve_layer",
]


def __getattr__(name: str):  # lazy: the run stages pull in pyarrow/matplotlib only when used
    if name in ("explain", "RunResult"):
        from camscope import run

        return getattr(run, name)
    raise AttributeError(f"module 'camscope' has no attribute {name!r}")
