"""camscope: paper-faithful, fast class activation maps, measured.

Public API::

    from camscope import GradCAM, AblationCAM, ScoreCAM, explain, load_model
"""

from camscope._version import __version__
from camscope.methods import METHODS, AblationCAM, BaseCAM, CAMResult, GradCAM, ScoreCAM
from camscope.models import LoadedModel, load_model, resolve_layer
from camscope.pipeline import RunResult, explain

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
