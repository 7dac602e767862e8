"""TEMPLATE (copy to experiments/NAME.py; README "Adding a scenario"): the protocol of one scenario's run.

State here what the run does and what each recorded column means: this docstring is the reference for the
columns the scenario's rules read. The template's example: train the configured model with plain `fit` for
`train.batches` steps, then measure test accuracy with batch statistics, moving statistics and precise-BN
population statistics (protocol.decompose: acc_<train|test>_<batchstats|moving|precise>); `moving_gap` is
acc_test_precise - acc_test_moving, what the moving statistics cost at inference.

The contract (bnexp.toolkit.child calls it in the run's child process, TensorFlow already started):
- `run(cfg, ctx) -> dict`: `cfg` is the run's resolved config (OmegaConf), `ctx` a bnexp.toolkit.child.Context
  (ctx.fw: the framework flavour; ctx.data(): the run's dataset; ctx.workdir: files kept with the record;
  ctx.cache_dir; ctx.history: the training curve). Return a flat dict of numbers and short strings: the
  record's metric columns. Raise bnexp.errors.UserError for a setting the run cannot do (one line).
- Randomness: seed everything from cfg.seed; a second random stream takes an offset from experiments/seeds.py.
- Reuse the toolkit (bnexp.toolkit.protocol, probes, precise_bn, ...) rather than new code: the numbers of
  every scenario then come from the same, tested mechanisms. This file and every project module it imports
  make up the scenario's code fingerprint: editing them marks its records stale (bnexp/fingerprint.py).
"""

from __future__ import annotations

from bnexp.toolkit import protocol


def run(cfg, ctx) -> dict:
    d = ctx.data()
    model = protocol.build_model(cfg, ctx, d)
    out = {**protocol.train(cfg, ctx, model, d), **protocol.decompose(cfg, model, d)}
    out["moving_gap"] = out["acc_test_precise"] - out["acc_test_moving"]
    return out
