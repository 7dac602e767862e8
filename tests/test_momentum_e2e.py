"""The momentum scenario end to end through the real CLI, at tiny size."""

import math


def test_momentum_record_has_the_decomposition(run_cli):
    rec = run_cli("scenario=momentum", "bn.momentum=0.9")
    assert rec["status"] == "ok", rec["error"]
    for key in ("acc_train_fit", "acc_train_batchstats", "acc_train_moving", "acc_test_batchstats",
                "acc_test_moving", "acc_test_precise", "gap_test", "steps", "wall_s", "run_id", "claims",
                "semantics", "dataset", "device", "git_commit", "tensorflow", "keras"):
        assert key in rec, key
    assert rec["steps"] == 4
    assert math.isclose(rec["init_weight"], 0.9 ** 4)
    assert math.isclose(rec["gap_test"], rec["acc_test_batchstats"] - rec["acc_test_moving"])

