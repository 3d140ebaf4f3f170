"""TIRG ablation "only residual connection" (Vo et al., CVPR 2019, https://arxiv.org/abs/1812.07119,
ablation study): psi = x + a1 * res, the gate removed and the image kept by a plain identity skip, so the
composition is still a residual edit of x; a1 learnable, init 10 (the repo's a1)."""
from __future__ import annotations

from models.composers import COMPOSERS
from models.composers.tirg import TirgComposer


@COMPOSERS.register("tirg_residual_only")
class TirgResidualOnlyComposer(TirgComposer):
    use_gate, use_residual = False, True
    weights_init = (10.0,)
