"""TIRG with fixed branch weights (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119):
psi = gate * x + res, i.e. a = (1, 1) held in a buffer, not learned.

Why (1, 1) and not the repo's (1, 10): (1, 10) is only an initialisation, chosen because a is learned
and can move; frozen, it would hard-wire a 10x residual. (1, 1) is the unweighted sum of the paper's
formula, psi = f_gate + f_res; the study compares it with learned a to ask whether learning the
weights matters.
"""
from __future__ import annotations

from models.composers import COMPOSERS
from models.composers.tirg import TirgComposer


@COMPOSERS.register("tirg_fixed")
class TirgFixedComposer(TirgComposer):
    weights_init = (1.0, 1.0)
    learn_weights = False
