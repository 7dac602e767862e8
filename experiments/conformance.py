"""Conformance: which BN pitfalls does this Keras 3 release on this backend have? (issue #29)

Protocol. No dataset and no training run: every probe of bnexp.toolkit.conformance_probes, each on tiny
synthetic tensors seeded by the run's seed, with the sizes in `conformance` (configs/scenario/conformance.yaml):
C03/C07 (training=False fixed in the model), C04 (training=True), C14 (training=None), C15 (the fine-tuning
guide's base(x, training=False)), C16 (a layer defaulting to training=True before BN), C17 (trainable flipped
after compile), C18 (variance of inputs with a large mean), C19 (XLA, TensorFlow backend only), C20 (Masking
over padded sequences), C21 (Dropout before BN). Each returns its measured behaviour as numbers; a probe this
release/backend cannot run records `<probe>_error` and the others still run. Seconds per run in a warm worker.

The conformance grid (configs/sweep/reference.yaml) runs this for every Keras release and backend; the report's
conformance section (bnexp.conformance_report) judges each claim per (release, backend) with the checks in
`scenario.report.conformance`, and the verdict rules for C18-C21 read the default setup, as for every scenario.
"""

from __future__ import annotations

from bnexp.toolkit import conformance_probes


def run(cfg, ctx) -> dict:
    keras = ctx.fw.keras
    out = {"setup": f"{ctx.fw.backend} / Keras {keras.__version__}"}
    out.update(conformance_probes.run_all(keras, ctx.fw.backend, int(cfg.seed), cfg.conformance,
                                          only=list(cfg.conformance.probes or [])))
    return out
