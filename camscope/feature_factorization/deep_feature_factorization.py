"""pytorch-grad-cam's module path: `camscope.methods.factorization` (Deep Feature Factorization)."""

from camscope.methods.factorization import DeepFeatureFactorization, dff, run_dff_on_image

__all__ = ["DeepFeatureFactorization", "dff", "run_dff_on_image"]
