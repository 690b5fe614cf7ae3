"""Evaluation: full-ranking RecBole metrics, chunked embedding evaluation, user groups, significance."""

from pmtrec_lab.eval.evaluator import EvalResult, evaluate_embeddings
from pmtrec_lab.eval.groups import group_metrics, user_groups
from pmtrec_lab.eval.metrics import full_ranking_metrics
from pmtrec_lab.eval.significance import paired_per_user, wilcoxon_paired

__all__ = [
    "EvalResult",
    "evaluate_embeddings",
    "full_ranking_metrics",
    "group_metrics",
    "paired_per_user",
    "user_groups",
    "wilcoxon_paired",
]
