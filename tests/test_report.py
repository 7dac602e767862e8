"""The report builds from a small fixture store: verdict table, sections, figures it links exist."""

import re

from bnexp import report
from bnexp.store import Store


def _fixture_store(root):
    store = Store(root)
    i = 0
    for seed in range(3):
        for scaling in ("unit", "raw"):
            for momentum in (0.9, 0.99):
                for batches in (10, 100):
                    gap = 0.3 if (scaling == "raw" and momentum == 0.99 and batches == 10) else 0.01 * seed
                    rec = {"run_id": f"r{i}", "scenario": "momentum", "claims": "C01,C02", "status": "ok",
                           "error": None, "seed": seed, "semantics": "keras3", "bn.momentum": momentum,
                           "train.batches": batches, "data.scaling": scaling, "gap_test": gap,
                           "acc_test_batchstats": 0.8, "acc_test_moving": 0.8 - gap, "acc_test_precise": 0.8,
                           "momentum_used": momentum, "tensorflow": "2.x", "keras": "3.x", "device": "cpu"}
                    store.commit(store.begin("momentum", f"r{i}"), "momentum", f"r{i}", rec)
                    i += 1
    failed = {"run_id": "bad", "scenario": "momentum", "status": "failed", "error": "boom", "seed": 0}
    store.commit(store.begin("momentum", "bad"), "momentum", "bad", failed)
    return store


def test_report_from_fixture_store(tmp_path):
    _fixture_store(tmp_path)
    path = report.build(tmp_path)
    text = path.read_text()
    assert text.startswith("# bnexp report")
    for claim in [f"C{i:02d}" for i in range(1, 16)]:
        assert f"| {claim} |" in text
    assert "## Scenario `momentum`" in text and "boom" in text
    assert (tmp_path / "tables" / "momentum.csv").exists()
    assert (tmp_path / "tables" / "momentum_summary.md").exists()
    links = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert links, "the momentum section links its heatmap"
    for link in links:
        assert (tmp_path / link).exists(), link


def test_report_on_empty_store_says_not_measured(tmp_path):
    text = report.build(tmp_path).read_text()
    assert "not measured (no records)" in text
