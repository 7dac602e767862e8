"""The frozen_base scenario (C05, C06, C15, R1).

End to end through the CLI at tiny size, one run per semantics, asserting the record's keys and what
is exact: whether each BN layer normalized with batch or moving statistics in fit and in evaluate, and
whether its moving statistics changed during fit (exact array comparison). These assert what the
frameworks do today (TF 2.21, Keras 3.15, tf-keras 2.21); a failure means a framework changed behaviour.
The probes it relies on (precise BN through a frozen nested base, probes.bn_modes) are tested against
NumPy per semantics in test_probes.py.
"""

import pytest
from conftest import bnexp, run_batch

# Tiny pretraining and stages on top of conftest's TINY sizes.
SMALL = ["transfer.pretrain_steps=20", "transfer.dist_batches=2", "transfer.stage2_steps=3"]
KEYS = ("acc_train_fit", "acc_train_eval", "acc_test_eval", "acc_train_batchstats", "acc_train_moving",
        "acc_test_batchstats", "acc_test_moving", "acc_train_precise", "acc_test_precise", "precise_gain_test",
        "fit_eval_gap", "fit_batchstats_frac", "eval_batchstats_frac", "mode_residual", "bn_stats_changed",
        "changed.conv1_norm", "changed.conv2_norm", "changed.fc1_norm", "stat_dist_before", "stat_dist_after",
        "before.conv1_norm.mean_err", "base_cache_hit", "base_source_acc_test", "batch_dependence", "stage2_ran",
        "transfer.shift", "base.trainable", "base.training", "base.flag_style", "semantics", "flag_honoured",
        "stat_err_max", "stat_converged")


# The runs of the end-to-end tests below, in this order: one multirun, one warm worker per kind of semantics
# (conftest.run_batch), a base cache of their own. The first run pretrains its base (verbose=1: its log shows that
# progress); keras2_v1 with training=true comes after it and reads that base from the cache.
RUNS = {"keras2_v1": ["verbose=1"],
        "keras2_v1_training_true": ["base.training=true"],
        "keras3_stage2": ["semantics=keras3", "base.training=false", "transfer.stage2=true"],
        "tf_keras_stage2": ["semantics=tf_keras", "base.training=false", "transfer.stage2=true"],
        "keras3_layer_flag": ["semantics=keras3", "base.training=false", "base.flag_style=layer",
                              "transfer.stage2=true"],
        "keras3_c05_arms": ["semantics=keras3", "base.trainable=true", "transfer.lag_arms=[[0.99,3],[0.9,6]]"]}


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple:
    """(results folder, {name: record}) of RUNS."""
    results = tmp_path_factory.mktemp("frozen_base") / "results"
    recs = run_batch([["scenario=frozen_base", *SMALL, *o] for o in RUNS.values()], results,
                     tmp_path_factory.mktemp("frozen_base_cache"))
    return results, dict(zip(RUNS, recs))


@pytest.fixture(scope="module")
def runs(batch) -> dict:
    return batch[1]


def test_keras2_v1_frozen_base_uses_batch_stats_in_fit_and_never_updates_them(runs):
    """C06's mechanism under Keras <= 2.2.4 semantics (the scenario's default = the classic pitfall)."""
    rec = runs["keras2_v1"]
    assert rec["status"] == "ok", rec["error"]
    for key in KEYS:
        assert key in rec, key
    assert (rec["semantics"], rec["base.trainable"], rec["base.training"]) == ("keras2_v1", False, None)
    assert rec["transfer.shift"] == "invert" and rec["stage2_ran"] == 0
    assert rec["fit_batchstats_frac"] == 1.0  # frozen, yet batch statistics in fit ...
    assert rec["eval_batchstats_frac"] == 0.0  # ... and the (source) moving statistics in evaluate
    assert rec["bn_stats_changed"] == 0.0  # the V1 layer skips its update when trainable=False
    assert rec["mode_residual"] < 1e-3  # the batch/moving decision was clean

    # Hard-coding training=True on the frozen base: still no update, batch statistics in fit and evaluate.
    # Same semantics and seed: the base comes from the cache.
    rec = runs["keras2_v1_training_true"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["base_cache_hit"] == 1.0
    assert (rec["fit_batchstats_frac"], rec["eval_batchstats_frac"], rec["bn_stats_changed"]) == (1.0, 1.0, 0.0)


def test_keras3_frozen_base_is_in_inference_mode_and_unfreezing_overrides_training_false(runs):
    """C06 gone under Keras 3; C15 under Keras 3: fit's training=True replaces the training=False given
    when the functional model was built, so after unfreezing (stage 2) the moving statistics change."""
    rec = runs["keras3_stage2"]
    assert rec["status"] == "ok", rec["error"]
    assert (rec["fit_batchstats_frac"], rec["eval_batchstats_frac"], rec["bn_stats_changed"]) == (0.0, 0.0, 0.0)
    assert rec["stat_dist_after"] == pytest.approx(rec["stat_dist_before"], rel=0.5)  # frozen: same base
    assert rec["stage2_ran"] == 1.0
    assert (rec["s2_fit_batchstats_frac"], rec["s2_eval_batchstats_frac"]) == (1.0, 0.0)
    assert rec["s2_bn_stats_changed"] == 1.0
    assert rec["s2_flag_honoured"] == 0.0  # the flag never reached BN: C15 untestable here (precondition)
    for key in ("s2_acc_train_fit", "s2_acc_train_eval", "s2_acc_test_precise", "s2_stat_dist_after"):
        assert key in rec, key


def test_tf_keras_keeps_training_false_after_unfreezing(runs):
    """C15 under tf-keras: the training=False fixed in the functional model holds in stage 2."""
    rec = runs["tf_keras_stage2"]
    assert rec["status"] == "ok", rec["error"]
    modes = (rec["s2_fit_batchstats_frac"], rec["s2_eval_batchstats_frac"], rec["s2_bn_stats_changed"])
    assert modes == (0.0, 0.0, 0.0)
    assert rec["s2_flag_honoured"] == 1.0


def test_keras3_layer_level_flag_in_stage2(runs):
    """C15's layer-level variant: every BN inside the base called with training=False while building.
    Whatever Keras 3 does with it, flag_honoured must agree with the modes measured."""
    rec = runs["keras3_layer_flag"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["keras"].startswith("3.")
    honoured = rec["s2_fit_batchstats_frac"] == 0.0 and rec["s2_eval_batchstats_frac"] == 0.0
    assert rec["s2_flag_honoured"] == float(honoured)


def test_c05_arms_repeat_the_fine_tuning_at_other_momenta_and_lengths(runs):
    rec = runs["keras3_c05_arms"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["flag_honoured"] != rec["flag_honoured"]  # NaN: base called without training=
    for prefix in ("c05_m99_b3_", "c05_m90_b6_"):
        for key in ("fit_eval_gap", "bn_stats_changed", "precise_gain_test", "stat_err_max", "stat_converged"):
            assert prefix + key in rec, prefix + key
    # the arms change only momentum and length: the same base and head, so the first-step mode is the same
    assert rec["c05_m99_b3_fit_batchstats_frac"] == rec["fit_batchstats_frac"]


def test_missing_source_dataset_fails_fast_and_names_the_key(tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=frozen_base", "semantics=keras3", "transfer.source=mnist",
                  "data.train_size=512", "data.test_size=256"], tmp_path / "res", cache_dir, check=False, timeout=120)
    assert proc.returncode != 0
    assert "transfer.source=mnist" in proc.stderr and "mnist" in proc.stderr


@pytest.mark.parametrize("override,key", [("base.flag_style=sideways", "base.flag_style"),
                                          ("transfer.shift=rotate", "transfer.shift"),
                                          ("transfer.target=imagenet", "transfer.target"),
                                          ("base.training=maybe", "base.training"),
                                          ("model.flag_style=subclass", "model.flag_style")])
def test_bad_transfer_setting_is_one_line_before_tensorflow(override, key):
    """The scenario's allowed choices (scenario.allowed) are checked when the config is composed."""
    from bnexp import config_check
    from bnexp.errors import UserError

    config_check.compose(["scenario=frozen_base"])  # the defaults are fine
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config_check.compose(["scenario=frozen_base", override])


def test_bad_lag_arm_is_a_clear_error():
    from hydra import compose, initialize_config_dir

    from bnexp import CONFIG_DIR
    from bnexp.errors import UserError
    from experiments.frozen_base import check

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["scenario=frozen_base", "transfer.lag_arms=[[1.5,100]]"])
    with pytest.raises(UserError, match=r"transfer\.lag_arms"):
        check(cfg)


# ---------------------------------------------------------------- the scenario's verdict rules


def _rules():
    from omegaconf import OmegaConf

    from bnexp import CONFIG_DIR

    return OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "scenario" / "frozen_base.yaml"))["scenario"]["verdicts"]


def test_every_claim_has_a_rule_on_a_recorded_metric():
    import re

    rules = _rules()
    assert {r["claim"] for r in rules} >= {"C05", "C06", "C15", "R1"}
    arms = ("", "s2_", "c05_m99_b100_", "c05_m90_b300_", "c05_m99_b300_")
    recorded = {f"{p}{k}" for k in KEYS for p in arms} | {"s2_flag_honoured"}
    for r in rules:
        for name in re.findall(r"[A-Za-z_][\w.]*", r["metric"]):
            assert name in recorded, (r["metric"], name)
        assert r.get("precondition", "s2_flag_honoured") in recorded


def test_rules_judge_only_the_semantics_they_name():
    """Synthetic records (not the sweep's): `by: semantics` must not pull in semantics `where` left out."""
    import pandas as pd

    from bnexp.verdicts import evaluate

    rows = [{"status": "ok", "seed": s, "semantics": sem, "base.trainable": False, "base.training": False,
             "base.flag_style": "functional", "transfer.stage2": True,
             "s2_bn_stats_changed": 1.0 if sem == "keras3" else 0.0, "s2_flag_honoured": 1.0}
            for s in range(5) for sem in ("keras3", "tf_keras", "keras2_v1")]
    c15 = next(r for r in _rules() if r["claim"] == "C15")
    verdict = evaluate(pd.DataFrame(rows), c15)
    assert [g.label for g in verdict.groups] == ["semantics=keras3 & base.flag_style=functional",
                                                 "semantics=tf_keras & base.flag_style=functional"]
    assert verdict.verdict == "depends on semantics"  # the factor that separates the groups (one flag style here)
    assert [g.outcome for g in verdict.groups] == ["fails", "holds"]
    # Keras 3 ignoring the flag is the claim failing there (the guide's pattern does not hold), not missing
    # evidence: the statistics rule has no precondition, and the flag rule fails for keras3 too
    for row in rows:
        row["s2_flag_honoured"] = 0.0 if row["semantics"] == "keras3" else 1.0
    verdict = evaluate(pd.DataFrame(rows), c15)
    assert [g.outcome for g in verdict.groups] == ["fails", "holds"]
    flag_rule = [r for r in _rules() if r["claim"] == "C15"][1]
    assert flag_rule["metric"] == "s2_flag_honoured"
    assert [g.outcome for g in evaluate(pd.DataFrame(rows), flag_rule).groups] == ["fails", "holds"]


def test_pretraining_progress_is_labelled(batch):
    """Issue #28: a first run's pretraining progress (verbose=1, in the run's log.txt) says it is the base's, not
    the run's fine-tuning."""
    results, recs = batch
    rec = recs["keras2_v1"]
    assert rec["base_cache_hit"] == 0.0  # the batch's own cache: this run pretrained the base
    log = (results / "runs" / "frozen_base" / rec["run_id"] / "log.txt").read_text()
    assert "pretraining the base on the source task: 20 steps (once per semantics and seed, then cached)" in log
    assert log.index("pretraining the base") < log.index("fine-tuning on the target task: 4 steps")
