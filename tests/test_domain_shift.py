"""The domain_shift scenario (R2) end to end through the real CLI at tiny size, and its corruptions."""

import numpy as np
import pytest
from conftest import run_batch
from rule_metrics import missing_rule_metrics

from bnexp.errors import UserError
from bnexp.names import CORRUPTIONS, SEVERITIES
from bnexp.toolkit import data

SMALL = ["scenario=domain_shift", "data.test_size=600", "domain_shift.eval_samples=200",
         "domain_shift.adapt_samples=[1,16,400]", "domain_shift.adapt_batch_size=64"]


def images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruptions_are_deterministic_and_grow_with_severity(kind):
    x = images()
    dist = []
    for sev in SEVERITIES:
        a, b = data.corrupt(x, kind, sev, seed=3), data.corrupt(x, kind, sev, seed=3)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.uint8 and a.shape == x.shape
        dist.append(np.abs(a.astype(float) - x).mean())
    assert all(d1 <= d2 for d1, d2 in zip(dist, dist[1:])) and dist[-1] > dist[0] > 0


def test_corruption_details():
    x = images()
    assert not np.array_equal(data.corrupt(x, "noise", 3, seed=0), data.corrupt(x, "noise", 3, seed=1))
    np.testing.assert_array_equal(data.corrupt(x, "inversion", 5), 255 - x)
    c = data.corrupt(x, "contrast", 5).astype(float)
    assert c.std(axis=(1, 2, 3)).max() < x.astype(float).std(axis=(1, 2, 3)).min()
    with pytest.raises(UserError, match="unknown corruption 'fog'"):
        data.corrupt(x, "fog", 1)
    with pytest.raises(UserError, match="unknown severity 6"):
        data.corrupt(x, "noise", 6)


def test_bn_adapts_and_gn_has_nothing_to_adapt(tmp_path, cache_dir):
    # one multirun, in this order, one warm worker (conftest.run_batch)
    bn, again, gn = run_batch([[*SMALL, "domain_shift.kind=inversion"], [*SMALL, "domain_shift.kind=blur"],
                               [*SMALL, "norm=gn", "domain_shift.kind=inversion"]], tmp_path / "results", cache_dir)
    assert bn["status"] == "ok", bn["error"]
    assert missing_rule_metrics(bn, "domain_shift") == set()
    assert bn["eval_size"] == 200 and bn["adapt_pool_size"] == 400  # disjoint parts of the 600 test images
    for tag in ("clean", "s1", "s5"):
        assert {f"acc_{tag}_source", f"acc_{tag}_n1", f"acc_{tag}_n400", f"acc_{tag}_adapted"} <= set(bn)
    assert bn["acc_s5_adapted"] == bn["acc_s5_n400"]
    assert bn["gain_s5"] == pytest.approx(bn["acc_s5_adapted"] - bn["acc_s5_source"])
    assert bn["source_converged"] in (0, 1) and bn["source_from_cache"] == 0
    assert again["source_from_cache"] == 1  # one source model per setup, shared by the corruption kinds
    assert gn["status"] == "ok", gn["error"]
    assert "acc_s5_source" in gn and "acc_s5_adapted" not in gn and "source_converged" not in gn
