"""Keys the searchers (study/search.py) add to a trial's config beside the hyperparameters. Apart
from study/trial_config.py, which imports the models, so that a trial's Tune process reads them
without importing torch."""
from __future__ import annotations

CONFIG_ID = "__config__"  # the configuration's id, stable across the trials that train it ("c0003", "b0001")
UNTIL = "__until__"  # train up to this epoch (a rung of the sync scheduler; the budget's epochs otherwise)
ROLE = "__role__"  # "searched" (proposed by the sampler) or "baseline" (a matched baseline, A.9)
BASELINE_OF = "__baseline__"  # for a searched configuration with a regulariser: its matched baseline's id
DEFAULT_CONFIG_ID = "c0000"  # a config without CONFIG_ID (a run of study.train)
CONTROL_KEYS = (CONFIG_ID, UNTIL, ROLE, BASELINE_OF)
