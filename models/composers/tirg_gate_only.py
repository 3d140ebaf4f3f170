"""TIRG ablation "only gating connection" (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119,
ablation study): psi = a0 * gate * x, the residual branch removed; a0 learnable, init 1 (the repo's a0)."""
from __future__ import annotations

from models.composers import COMPOSERS
from models.composers.tirg import TirgComposer


@COMPOSERS.register("tirg_gate_only")
class TirgGateOnlyComposer(TirgComposer):
    use_gate, use_residual = True, False
    weights_init = (1.0,)
