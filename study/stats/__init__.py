"""Statistics of a study (methods.md A.9): intervals over seeds and test queries, paired gains, importance.

bootstrap.py   the query level: resample test queries, recompute Recall@K and WHM
intervals.py   a seed mean's interval: Student t over seeds + the query bootstrap's shared variance
paired.py      paired differences, Holm, rliable's probability of improvement, power
importance.py  fANOVA and PED-ANOVA per composer (Optuna)
"""
from study.stats.bootstrap import Cells, bootstrap_recalls, cell_recalls, query_indices, recalls_for_indices, whm_of
from study.stats.importance import importance_table
from study.stats.intervals import MIN_SEEDS, MeanEstimate, estimate_mean
from study.stats.paired import (detectable_gain, holm, paired_difference, power, probability_of_improvement,
                                seeds_needed)

__all__ = ["MIN_SEEDS", "Cells", "MeanEstimate", "bootstrap_recalls", "cell_recalls", "detectable_gain",
           "estimate_mean", "holm", "importance_table", "paired_difference", "power",
           "probability_of_improvement", "query_indices", "recalls_for_indices", "seeds_needed", "whm_of"]
