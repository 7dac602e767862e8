"""Refactoring guard: a few tiny runs give the same run ids and the same numbers as stored in the repo.

tests/numbers_unchanged.json holds the run id and every non-timing metric of each config in CONFIGS,
recorded with the code of commit d2440e6 (before the toolkit's mechanisms were merged into one place
each) by running this file as a script from the repository root:

    python tests/test_numbers_unchanged.py --write

Rewrite it only when a protocol changes on purpose, and say so in the commit. Timings, process ids,
versions and cache hits are not compared: they differ between machines and runs, not between code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).with_name("numbers_unchanged.json")
TINY_TRANSFER = ["transfer.pretrain_steps=20", "transfer.dist_batches=2", "transfer.stage2_steps=3"]
CONFIGS = {  # on top of conftest.TINY; together they touch every mechanism the toolkit shares
    "momentum": ["scenario=momentum"],
    "frozen_base_subclass": ["scenario=frozen_base", "semantics=keras3", "base.flag_style=subclass",
                             "base.training=false", "transfer.stage2=true", *TINY_TRANSFER],
    "update_ops_manual": ["scenario=update_ops", "update_ops.impl=manual"],
    "variance": ["scenario=variance", "train.batch_size=4", "train.epochs=0.5", "variance.recompute_samples=32",
                 "variance.curve_batches=[1,2,4]"],
    "training_flag_subclass": ["scenario=training_flag", "model.flag_style=subclass", "bn.training=true",
                               "training_flag.compare_nobn=false", "training_flag.eval_samples=64",
                               "training_flag.eval_batch_sizes=[1,8,64]"],
}
NOT_COMPARED = {"wall_s", "child_s", "peak_rss_mb", "started_at", "git_commit", "git_clean", "device", "tensorflow", "keras",
                "keras_backend",
                "proc.pid", "base_cache_hit", "nobn_from_cache"}


def _compared(record: dict) -> dict:
    """The record without what differs between runs of the same code (timings end in _s or _per_s)."""
    return {k: v for k, v in record.items()
            if k not in NOT_COMPARED and not k.endswith(("_s", "_per_s"))}


def _run(name: str, results: Path, cache_dir: Path) -> dict:
    from conftest import TINY, bnexp, records

    bnexp(["run", *TINY, *CONFIGS[name]], results / name, cache_dir)
    (record,) = records(results / name)
    return _compared(record)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_run_id_and_numbers_match_the_stored_ones(name, tmp_path, cache_dir):
    stored, now = json.loads(FIXTURE.read_text())[name], _run(name, tmp_path, cache_dir)
    assert now["run_id"] == stored["run_id"], f"{name}: run id changed"
    changed = {k: (stored.get(k), now.get(k)) for k in stored.keys() | now.keys() if stored.get(k) != now.get(k)}
    assert not changed, f"{name}: (stored, now) differ: {changed}"


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        found = {name: _run(name, Path(tmp) / "results", Path(tmp) / "cache") for name in CONFIGS}
    FIXTURE.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
