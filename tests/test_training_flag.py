"""The training_flag scenario end to end through the real CLI, at tiny size."""

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

SMALL = ["scenario=training_flag", "training_flag.eval_samples=64", "training_flag.eval_batch_sizes=[1,8,64]",
         "training_flag.probe_steps=2"]
KEYS = ("stats_changed_fit", "stats_changed_predict", "stats_changed_evaluate", "stats_changed_call",
        "moving_at_init", "acc_test_predict", "acc_test_evaluate", "acc_test_nobn", "acc_vs_nobn",
        "acc_test_bs1", "acc_test_bs8", "acc_test_bs64", "acc_bs_spread", "logit_diff_alone_vs_batch",
        "fit_predict_max_diff", "fit_predict_agree", "learning_phase_api", "variant")


# The runs of the fast tests below: one multirun, one warm worker per semantics (conftest.run_batch).
RUNS = {"subclass_false": ["bn.training=false", "model.flag_style=subclass"],
        "default": ["training_flag.compare_nobn=false"],
        "functional_true": ["bn.training=true", "training_flag.compare_nobn=false"],
        "tf_keras_graph": ["semantics=tf_keras", "training_flag.compare_nobn=false",
                           "training_flag.learning_phase_probes=false"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    recs = run_batch([[*SMALL, *o] for o in RUNS.values()], tmp_path_factory.mktemp("flag") / "results", cache_dir)
    return dict(zip(RUNS, recs))


def test_hard_coded_false_in_call_freezes_the_moving_stats_exactly(runs):
    rec = runs["subclass_false"]
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
    assert missing_rule_metrics(rec, "training_flag") == {  # C07's learning-phase rules: tf_keras only
        "graph_lp_before_after_differ", "`graph.lp1_before.stats_changed_fit` - `graph.lp0_before.stats_changed_fit`",
        "`lp1_before.call_batchstats` - `lp0_before.call_batchstats`"}
    # Keras 3 honours a flag hard-coded in call(): BN ran in inference mode in fit and predict
    assert rec["flag_honoured"] == 1 and rec["fitcap_predict_agree"] == 1
    assert rec["stat_converged"] == 0  # training=False: the moving statistics never left 0/1
    assert 0 <= rec["acc_test_precise"] <= 1


def test_default_flag_updates_in_fit_only(runs):
    rec = runs["default"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["stats_changed_fit"] == 1 and rec["moving_at_init"] == 0
    assert rec["stats_changed_predict"] == 0 and rec["stats_changed_evaluate"] == 0
    assert rec["stats_changed_call"] == 0  # a direct call without training= runs in inference mode
    assert "acc_test_nobn" not in rec
    # what fit itself computed (batch statistics) is not what predict gives (moving statistics)
    assert rec["fitcap_predict_agree"] == 0 and rec["fitcap_predict_max_diff"] > 1e-3
    assert rec["stat_err_max"] > 0 and rec["stat_converged"] in (0, 1)
    assert rec["flag_honoured"] != rec["flag_honoured"]  # NaN: no flag fixed


def test_keras3_functional_ignores_the_build_time_flag(runs):
    """Keras 3.15 functional: training=True given while building never reaches BN: flag_honoured 0, so
    the flag rules count this variant as `precondition not met`."""
    rec = runs["functional_true"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["keras"].startswith("3.")
    assert rec["flag_honoured"] == 0


@pytest.mark.slow  # ~10 s; the graph-mode learning-phase test below runs in make test
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
    assert rec["flag_honoured"] == 1
    assert not any(k.startswith("graph") for k in rec)  # graph-mode probes: bn.training=null only


def test_tf_keras_graph_mode_learning_phase(runs):
    rec = runs["tf_keras_graph"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["graph_eager"] == 0  # the child really ran without eager execution
    for v in (0, 1):
        for when in ("before", "after"):
            for key in ("stats_changed_fit", "predict_batch_dependent", "stats_changed_predict"):
                assert rec[f"graph.lp{v}_{when}.{key}"] in (0, 1)
    # set_learning_phase(1) before building: fit updates the stats; after building it does not
    assert rec["graph.lp1_before.stats_changed_fit"] == 1 and rec["graph.lp1_after.stats_changed_fit"] == 0
    assert rec["graph_lp_before_after_differ"] == 1
    # compare_nobn=false and learning_phase_probes=false (the eager probes) here
    assert missing_rule_metrics(rec, "training_flag") == {
        "acc_vs_nobn_abs", "`lp1_before.call_batchstats` - `lp0_before.call_batchstats`"}
