"""The trainable_after_compile scenario (C17) end to end through the real CLI, at tiny size."""

import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

SMALL = ["scenario=trainable_after_compile", "trainable_after_compile.stage1_steps=2",
         "trainable_after_compile.stage2_steps=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict:
    """Every run this file asserts on: one multirun, one warm keras3 worker (conftest.run_batch)."""
    configs = [[*SMALL, "trainable_after_compile.recompile=false"], [*SMALL, "trainable_after_compile.recompile=true"],
               [*SMALL, "trainable_after_compile.target=bn", "trainable_after_compile.recompile=true"]]
    stale, fresh, bn = run_batch(configs, tmp_path_factory.mktemp("tac") / "results", cache_dir)
    return {"stale": stale, "fresh": fresh, "bn": bn}


def test_keras3_freeze_after_a_fit_needs_a_recompile(runs):
    stale, fresh = runs["stale"], runs["fresh"]
    for rec in (stale, fresh):
        assert rec["status"] == "ok", rec["error"]
        assert missing_rule_metrics(rec, "trainable_after_compile") == set()
        assert rec["variant"] == "keras3/model"
    # Keras 3's train function, built by the first fit, still updates what was frozen after it
    assert stale["frozen_weights_changed"] == 1 and stale["frozen_weights_change"] > 0
    assert stale["stats_changed"] == 1
    # compiled again: nothing frozen moves, to the bit
    assert fresh["frozen_weights_changed"] == 0 and fresh["frozen_weights_change"] == 0
    assert fresh["stats_changed"] == 0 and fresh["stats_change"] == 0


def test_bn_target_keeps_the_other_weights_training(runs):
    rec = runs["bn"]
    assert rec["status"] == "ok", rec["error"]
    assert rec["other_weights_changed"] == 1  # the convolutions and dense layers still learn
    assert rec["frozen_weights_changed"] == 0 and rec["stats_changed"] == 0
