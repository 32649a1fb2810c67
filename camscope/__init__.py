"""camscope: paper-faithful, fast class activation maps, measured.

Public API::

    from camscope import GradCAM, AblationCAM, ScoreCAM, explain, load_model
"""

from camscope.methods import METHODS, AblationCAM, BaseCAM, CAMResult, GradCAM, ScoreCAM
from camscope.models import LoadedModel, load_model, resolve_layer

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "CAMResult",
    "GradCAM",
    "LoadedModel",
    "ScoreCAM",
    "__version__",
    "load_model",
    "resolve_layer",
]
