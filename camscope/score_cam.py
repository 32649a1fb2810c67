"""pytorch-grad-cam's module path: `camscope.methods.perturbation.ScoreCAM`.

pytorch-grad-cam's weights by default.
"""

from camscope.methods.perturbation import ScoreCAM

__all__ = ["ScoreCAM"]
