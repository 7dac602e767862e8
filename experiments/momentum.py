"""C01/C02: with high momentum and few training batches the moving statistics stay near their initial
0/1, so inference accuracy falls below training-mode accuracy; momentum exp(-1/B) is said to fix it.

Protocol: train for B = train.batches steps with momentum m = bn.momentum, then measure on the same
data the accuracy with batch statistics, with the moving statistics and with precise-BN population
statistics (R1), and how far the moving statistics are from the population ones.
"""

from __future__ import annotations

from bnexp import protocol


def run(cfg, ctx) -> dict:
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    fit = protocol.train(cfg, ctx, model, d)
    m, steps = float(cfg.bn.momentum), int(cfg.train.batches)
    return {
        **fit,
        **protocol.decompose(cfg, model, d),
        "init_weight": m ** steps,  # share of the initial 0/1 left in the moving statistics
    }
