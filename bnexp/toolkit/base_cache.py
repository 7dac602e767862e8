"""A disk cache of pretrained bases, keyed by what went into them, safe for concurrent runs.

A transfer-learning run needs a base pretrained on a source task. Pretraining is the slow part, and
every run of a sweep with the same source task, model, semantics and seed needs the same base, so it
is built once and then read back. The cache knows nothing about Keras: a base is a list of NumPy arrays
(the model's `get_weights()`) plus a small JSON-able dict of facts about it (source accuracy, time).

    <cache_dir>/bases/<key>.npz    weights w0000.. and the entry's `spec` and `meta` as JSON
    <cache_dir>/bases/<key>.lock   fcntl lock file: whoever holds it is the one pretraining

The key is a hash of the `spec` dict (dataset, source classes and shift, model, semantics, seed, steps,
...: everything that changes the weights). Concurrency: a process that misses takes an exclusive
`flock` on the key's lock file, looks again (another process may have finished meanwhile), and only
then builds; it writes to a temp file, fsyncs and renames it into place, so a reader sees a whole
entry or none. The kernel drops the lock when its holder dies, so a killed run never blocks the next
one, and a leftover temp file is just ignored. A damaged or mismatching entry is rebuilt, never trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bnexp.atomic import atomic_open

RECIPE_VERSION = 1  # bump when the way bases are built changes, so old entries stop matching


def spec_key(spec: dict) -> str:
    """A stable 16-hex-digit key for a JSON-able spec (key order does not matter)."""
    blob = json.dumps({"recipe": RECIPE_VERSION, **spec}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Entry:
    """One cached base."""

    weights: list[np.ndarray]
    meta: dict
    hit: bool  # True: read from disk; False: built by this call
    path: Path


class BaseCache:
    def __init__(self, cache_dir: str | os.PathLike):
        self.folder = Path(cache_dir).expanduser() / "bases"

    def path(self, spec: dict) -> Path:
        return self.folder / f"{spec_key(spec)}.npz"

    def load(self, spec: dict) -> Entry | None:
        """The cached entry for `spec`, or None if absent, damaged or built for another spec."""
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                stored_spec = json.loads(str(z["spec"]))
                meta = json.loads(str(z["meta"]))
                names = sorted(k for k in z.files if k.startswith("w"))
                weights = [z[k] for k in names]
        except Exception:  # truncated or foreign file: treat as a miss; the builder replaces it
            return None
        if stored_spec != json.loads(json.dumps(spec, default=str)):
            return None  # a hash collision or a hand-copied file: never use weights built for another spec
        return Entry(weights, meta, True, path)

    def get_or_build(self, spec: dict, build: Callable[[], tuple[list[np.ndarray], dict]]) -> Entry:
        """The entry for `spec`, calling `build()` -> (weights, meta) only if no process has built it yet."""
        found = self.load(spec)
        if found is not None:
            return found
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(spec)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process pretrains the same base
            try:
                found = self.load(spec)
                if found is not None:
                    return found
                weights, meta = build()
                self._write(path, spec, weights, meta)
                return Entry([np.asarray(w) for w in weights], meta, False, path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _write(path: Path, spec: dict, weights, meta: dict) -> None:
        arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
        with atomic_open(path) as f:
            np.savez(f, spec=np.array(json.dumps(spec, default=str)), meta=np.array(json.dumps(meta)), **arrays)
