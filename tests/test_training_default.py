"""The training_default scenario (C16) end to end through the real CLI, at tiny size."""

import pytest
from conftest import bnexp, run_batch
from rule_metrics import missing_rule_metrics

KEYS = ("stats_changed_predict", "stats_changed_evaluate", "stats_changed_call", "call_batchstats",
        "logit_diff_alone_vs_batch_predict", "logit_diff_alone_vs_batch_call", "acc_test_predict",
        "acc_test_call", "acc_test_precise", "pre_training_default", "variant")


def test_training_true_default_leaks_into_a_direct_call_but_the_control_does_not(tmp_path, cache_dir):
    leaky, control = run_batch([["scenario=training_default", "training_default.layer=user_true"],
                                ["scenario=training_default", "training_default.layer=user_none"]],
                               tmp_path / "results", cache_dir)  # one multirun, one worker
    for rec in (leaky, control):
        assert rec["status"] == "ok", rec["error"]
        assert all(key in rec for key in KEYS)
        assert missing_rule_metrics(rec, "training_default") == set()
    assert leaky["pre_training_default"] == 1 and control["pre_training_default"] == 0
    # the control: model(x) without training runs BN in inference mode and leaves the statistics alone
    assert control["call_batchstats"] == 0 and control["stats_changed_call"] == 0
    assert control["logit_diff_alone_vs_batch_call"] < 1e-4
    # Keras 3.15: the layer's training=True default reaches the BN after it in a direct call
    assert leaky["call_batchstats"] == 1 and leaky["stats_changed_call"] == 1
    # predict passes training=False itself, so both stay in inference mode there
    for rec in (leaky, control):
        assert rec["stats_changed_predict"] == 0 and rec["logit_diff_alone_vs_batch_predict"] < 1e-4


@pytest.mark.parametrize("override, key", [("training_default.layer=resize", "training_default.layer"),
                                           ("scenario=trainable_after_compile trainable_after_compile.target=all",
                                            "trainable_after_compile.target"),
                                           ("scenario=domain_shift domain_shift.kind=fog", "domain_shift.kind")])
def test_unknown_scenario_choice_is_one_line_before_any_run(override, key, tmp_path, cache_dir):
    proc = bnexp(["run", "scenario=training_default", *override.split()], tmp_path / "r", cache_dir, check=False)
    assert proc.returncode == 2 and not (tmp_path / "r" / "runs").exists()  # checked from the YAML, no child
    assert key in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
