"""The training_flag scenario end to end through the real CLI, at tiny size."""

from rule_metrics import missing_rule_metrics

SMALL = ["scenario=training_flag", "training_flag.eval_samples=64", "training_flag.eval_batch_sizes=[1,8,64]",
         "training_flag.probe_steps=2"]
KEYS = ("stats_changed_fit", "stats_changed_predict", "stats_changed_evaluate", "stats_changed_call",
        "moving_at_init", "acc_test_predict", "acc_test_evaluate", "acc_test_nobn", "acc_vs_nobn",
        "acc_test_bs1", "acc_test_bs8", "acc_test_bs64", "acc_bs_spread", "logit_diff_alone_vs_batch",
        "fit_predict_max_diff", "fit_predict_agree", "learning_phase_api", "variant")


def test_hard_coded_false_in_call_freezes_the_moving_stats_exactly(run_cli):
    rec = run_cli(*SMALL, "bn.training=false", "model.flag_style=subclass")
    assert rec["status"] == "ok", rec["error"]
    for key in KEYS:
        assert key in rec, key
    assert rec["variant"] == "keras3/subclass"
    # training=False inside call(): fit never touches the moving statistics, to the bit
    assert rec["moving_at_init"] == 1 and rec["stats_changed_fit"] == 0
    # inference mode everywhere: fit-mode and predict outputs are the same, batch size does not matter
    assert rec["fit_predict_agree"] == 1
    assert rec["logit_diff_alone_vs_batch"] < 1e-4
    assert rec["learning_phase_api"] == 0  # Keras 3 has no set_learning_phase
    assert not any(k.startswith("lp") and k != "learning_phase_api" for k in rec)
    assert missing_rule_metrics(rec, "training_flag") == {"lp_before_after_differ"}  # tf_keras only


def test_default_flag_updates_in_fit_only(run_cli):
    rec = run_cli(*SMALL, "training_flag.compare_nobn=false")
    assert rec["status"] == "ok", rec["error"]
    assert rec["stats_changed_fit"] == 1 and rec["moving_at_init"] == 0
    assert rec["stats_changed_predict"] == 0 and rec["stats_changed_evaluate"] == 0
    assert rec["stats_changed_call"] == 0  # a direct call without training= runs in inference mode
    assert "acc_test_nobn" not in rec


def test_tf_keras_learning_phase_probes(run_cli):
    rec = run_cli(*SMALL, "semantics=tf_keras", "bn.training=false", "training_flag.compare_nobn=false")
    assert rec["status"] == "ok", rec["error"]
    assert rec["learning_phase_api"] == 1
    for v in (0, 1):
        for when in ("before", "after"):
            for key in ("stats_changed_fit", "stats_changed_predict", "stats_changed_call", "call_batchstats"):
                assert f"lp{v}_{when}.{key}" in rec
    assert rec["lp_before_after_differ"] in (0, 1)
    assert rec["moving_at_init"] == 1  # a functional tf-keras model keeps training=False given while building
    assert missing_rule_metrics(rec, "training_flag") == {"acc_vs_nobn_abs"}  # compare_nobn=false here
