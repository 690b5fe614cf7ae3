"""Plotly figure builders: pure functions from run artifacts (tables) to ``go.Figure``.

Modules: ``training`` (learning curves, metrics, groups), ``weights`` (per-entity task weights),
``gradients`` (conflicts and magnitude ratios), ``comparison`` (methods side by side), ``benefit``
(the benefit map by entity bins), ``data``
(per-entity activity and social degree from a dataset, the weights figures' x axes).
A figure whose data the run or dataset lacks is a placeholder that says why
(:func:`missing_figure`, :func:`is_missing`), so a notebook panel explains itself and goes on.
"""

from pmtrec_lab.viz._common import MissingSourceError, is_missing, missing_figure, missing_reason, task_colors
from pmtrec_lab.viz.auxiliary import aux_metrics_over_epochs, aux_metrics_table
from pmtrec_lab.viz.benefit import benefit_by_bins
from pmtrec_lab.viz.comparison import ablation_deltas, ablation_figure, method_comparison, tuning_curve
from pmtrec_lab.viz.data import dataset_for_config, entity_activity, has_social_links, social_degree
from pmtrec_lab.viz.gradients import (
    conflict_fraction_over_epochs,
    conflict_summary,
    cosine_before_after,
    cosine_histograms,
    grad_norm_over_epochs,
    magnitude_summary,
    norm_ratio_over_epochs,
    norm_ratios,
)
from pmtrec_lab.viz.items import accuracy_coverage, beyond_at, beyond_table, item_group_figure, read_items
from pmtrec_lab.viz.training import (
    compare_learning_curves,
    compare_test_metrics,
    group_metrics_figure,
    group_metrics_table,
    learning_curves,
    metrics_bar,
    metrics_table,
)
from pmtrec_lab.viz.v3 import V3_SIGNALS, v3_signal
from pmtrec_lab.viz.v4 import level_rounds_figure, level_rounds_table
from pmtrec_lab.viz.weights import (
    applicable_weights,
    entity_trajectory,
    mean_task_weights,
    pick_entity,
    weight_activity_correlation,
    weight_distributions,
    weights_over_epochs,
    weights_vs_activity,
)

__all__ = [
    "V3_SIGNALS",
    "MissingSourceError",
    "ablation_deltas",
    "accuracy_coverage",
    "ablation_figure",
    "aux_metrics_over_epochs",
    "aux_metrics_table",
    "applicable_weights",
    "benefit_by_bins",
    "beyond_at",
    "beyond_table",
    "compare_learning_curves",
    "compare_test_metrics",
    "conflict_fraction_over_epochs",
    "conflict_summary",
    "cosine_before_after",
    "cosine_histograms",
    "dataset_for_config",
    "entity_activity",
    "entity_trajectory",
    "grad_norm_over_epochs",
    "group_metrics_figure",
    "group_metrics_table",
    "has_social_links",
    "is_missing",
    "item_group_figure",
    "learning_curves",
    "level_rounds_figure",
    "level_rounds_table",
    "magnitude_summary",
    "mean_task_weights",
    "method_comparison",
    "tuning_curve",
    "metrics_bar",
    "metrics_table",
    "missing_figure",
    "missing_reason",
    "norm_ratio_over_epochs",
    "norm_ratios",
    "pick_entity",
    "read_items",
    "social_degree",
    "task_colors",
    "weight_activity_correlation",
    "weight_distributions",
    "weights_over_epochs",
    "weights_vs_activity",
    "v3_signal",
]
