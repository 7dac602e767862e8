"""The pretrained-base cache: miss then hit, keys by content, damaged entries rebuilt, and two processes
asking for the same base at once pretrain it once (the other waits on the lock and reads the result)."""

import json
import multiprocessing as mp
import time

import numpy as np

from bnexp.toolkit.base_cache import BaseCache, spec_key

SPEC = {"dataset": "fashion_mnist", "classes": [0, 1, 2, 3, 4], "semantics": "keras3", "seed": 0, "steps": 500}


def weights(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 3)).astype(np.float32), rng.normal(size=7).astype(np.float32)]


def test_miss_builds_then_hit_reads_the_same_arrays(tmp_path):
    cache, calls = BaseCache(tmp_path), []

    def build():
        calls.append(1)
        return weights(), {"source_acc_test": 0.9}

    first = cache.get_or_build(SPEC, build)
    second = cache.get_or_build(SPEC, build)
    assert (first.hit, second.hit, len(calls)) == (False, True, 1)
    assert second.meta == {"source_acc_test": 0.9}
    for a, b in zip(first.weights, second.weights):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert not list(cache.folder.glob("*.tmp"))  # the temp file was renamed into place


def test_key_is_by_content_not_key_order():
    assert spec_key(SPEC) == spec_key(dict(reversed(list(SPEC.items()))))
    assert spec_key(SPEC) != spec_key({**SPEC, "seed": 1})
    assert spec_key(SPEC) != spec_key({**SPEC, "semantics": "tf_keras"})


def test_damaged_entry_is_rebuilt(tmp_path):
    cache = BaseCache(tmp_path)
    cache.get_or_build(SPEC, lambda: (weights(), {}))
    cache.path(SPEC).write_bytes(b"not an npz")
    entry = cache.get_or_build(SPEC, lambda: (weights(1), {"rebuilt": True}))
    assert not entry.hit and entry.meta == {"rebuilt": True}
    assert cache.load(SPEC).meta == {"rebuilt": True}


def test_entry_of_another_spec_under_this_key_is_not_trusted(tmp_path):
    cache = BaseCache(tmp_path)
    other = {**SPEC, "seed": 7}
    built = cache.get_or_build(other, lambda: (weights(), {}))
    cache.path(SPEC).write_bytes(built.path.read_bytes())  # e.g. a file copied by hand
    assert cache.load(SPEC) is None


def _worker(folder, log, barrier, out):
    barrier.wait()  # both processes miss at the same moment

    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)  # long enough for the other process to reach the lock
        return weights(), {"by": mp.current_process().name}

    entry = BaseCache(folder).get_or_build(SPEC, build)
    out.put(json.dumps({"hit": entry.hit, "meta": entry.meta, "sum": float(sum(w.sum() for w in entry.weights))}))


def test_two_processes_wanting_the_same_base_pretrain_it_once(tmp_path):
    ctx = mp.get_context("fork")
    barrier, out, log = ctx.Barrier(2), ctx.Queue(), tmp_path / "builds.log"
    procs = [ctx.Process(target=_worker, args=(tmp_path / "cache", log, barrier, out), name=f"p{i}")
             for i in range(2)]
    for p in procs:
        p.start()
    results = [json.loads(out.get(timeout=60)) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert log.read_text().count("built") == 1
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["meta"] == results[1]["meta"] and results[0]["sum"] == results[1]["sum"]
    assert not list((tmp_path / "cache" / "bases").glob("*.tmp"))
