"""pytorch-grad-cam's module path: `camscope.methods.perturbation.RandomCAM` (seeded weights)."""

from camscope.methods.perturbation import RandomCAM

__all__ = ["RandomCAM"]
