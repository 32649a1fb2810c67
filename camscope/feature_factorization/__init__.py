"""pytorch-grad-cam's package path ``feature_factorization`` (see `deep_feature_factorization`)."""
