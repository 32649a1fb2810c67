"""Faithfulness, agreement and sanity metrics for class activation maps, and their statistics.

Pure functions over a model: nothing here knows how a map was made (this package must not import
`camscope.methods` or the run). Modules:

- `camscope.metrics.faithfulness`: Average Drop / Increase in Confidence (Chattopadhyay et al.,
  WACV 2018), Deletion / Insertion (Petsiuk et al., BMVC 2018).
- `camscope.metrics.removal`: ROAD, remove-and-debias with noisy linear imputation (Rong et al.,
  ICML 2022), most- and least-relevant first.
- `camscope.metrics.localisation`: pointing game, energy-based pointing game, relevance mass
  and rank accuracy against ground-truth regions.
- `camscope.metrics.complexity`: sparseness (Gini) and entropy of each map.
- `camscope.metrics.synthetic`: coloured shapes with known positions and a small CNN, for
  meta-evaluating the metrics (benchmarks/meta_eval.py; not re-exported here).
- `camscope.metrics.road`, `.cam_mult_image`, `.perturbation_confidence`, `.arcc`:
  pytorch-grad-cam 1.5.7's metric classes at its module paths (not re-exported here).
- `camscope.metrics.agreement`: Pearson, Spearman and top-k IoU between maps.
- `camscope.metrics.sanity`: cascading model-parameter randomisation (Adebayo et al.,
  NeurIPS 2018).
- `camscope.metrics.stats`: dataset-level means, intervals, paired differences, ties.
- `camscope.metrics.labels`: ground truth and accuracy.

Every public name is importable from ``camscope.metrics`` directly.
"""

from __future__ import annotations

from camscope.metrics.agreement import (
    average_ranks,
    pearson,
    spearman,
    top_iou,
)
from camscope.metrics.complexity import entropy, sparseness
from camscope.metrics.faithfulness import (
    BLUR_KERNEL_SIZE,
    BLUR_SIGMA,
    DEFAULT_STEPS,
    DropIncrease,
    Faithfulness,
    StepSensitivity,
    auc,
    average_drop_increase,
    deletion_curve,
    explanation_inputs,
    faithfulness,
    gaussian_blur,
    insertion_curve,
    saliency_rank,
    step_sensitivity,
    target_probabilities,
)
from camscope.metrics.labels import (
    accuracy,
    load_labels,
    lookup_label,
    truth_from_filename,
)
from camscope.metrics.localisation import (
    POINTING_TOLERANCE,
    energy_pointing_game,
    pointing_game,
    relevance_mass,
    relevance_rank,
)
from camscope.metrics.removal import (
    NEIGHBOUR_WEIGHTS,
    ROAD,
    ROAD_FRACTIONS,
    ROAD_NOISE,
    noisy_linear_impute,
    removal_masks,
    removal_signature,
    road,
    road_curve,
    road_inputs,
)
from camscope.metrics.sanity import (
    SanityStep,
    SanityVerdict,
    empty_maps,
    passes_sanity,
    randomization_blocks,
    sanity_check,
    sanity_verdict,
)
from camscope.metrics.stats import (
    CONFIDENCE,
    CORRECTION,
    MIN_N,
    RESAMPLES,
    SE_FLOOR,
    Comparisons,
    Interval,
    PairedDifference,
    Ranking,
    bootstrap_interval,
    bootstrap_means,
    compare_methods,
    kendall_tau_b,
    mean_ci,
    paired_difference,
    proportion_interval,
    rank_methods,
    ranking_agreement,
    resample_counts,
    wilson_interval,
)

__all__ = [
    "NEIGHBOUR_WEIGHTS",
    "POINTING_TOLERANCE",
    "ROAD",
    "ROAD_FRACTIONS",
    "ROAD_NOISE",
    "energy_pointing_game",
    "entropy",
    "noisy_linear_impute",
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "removal_masks",
    "removal_signature",
    "road",
    "road_curve",
    "road_inputs",
    "sparseness",
    "SanityVerdict",
    "empty_maps",
    "sanity_verdict",
    "BLUR_KERNEL_SIZE",
    "BLUR_SIGMA",
    "CONFIDENCE",
    "CORRECTION",
    "Comparisons",
    "DEFAULT_STEPS",
    "DropIncrease",
    "Faithfulness",
    "Interval",
    "MIN_N",
    "PairedDifference",
    "RESAMPLES",
    "SE_FLOOR",
    "Ranking",
    "SanityStep",
    "StepSensitivity",
    "accuracy",
    "auc",
    "average_drop_increase",
    "average_ranks",
    "bootstrap_interval",
    "bootstrap_means",
    "compare_methods",
    "kendall_tau_b",
    "deletion_curve",
    "explanation_inputs",
    "faithfulness",
    "gaussian_blur",
    "insertion_curve",
    "load_labels",
    "lookup_label",
    "mean_ci",
    "paired_difference",
    "passes_sanity",
    "pearson",
    "proportion_interval",
    "randomization_blocks",
    "rank_methods",
    "ranking_agreement",
    "resample_counts",
    "saliency_rank",
    "sanity_check",
    "spearman",
    "step_sensitivity",
    "target_probabilities",
    "top_iou",
    "truth_from_filename",
    "wilson_interval",
]
