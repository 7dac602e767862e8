"""`bnexp compare A B`: do two sets of records hold the same numbers?

A and B are records files (`records.jsonl.gz`) or results folders that hold one (`results`, a scratch
sweep's paths.results_dir). Runs are matched by scenario and run id (the run's config). For each run in both,
every field is compared exactly except timings (`*_s`, `*_per_s`) and NOT_COMPARED, which describe the process,
the machine or the code's provenance rather than what the run measured. A missing value, None and NaN count as
the same. This shows that a re-run of the reference left its numbers alone, or what a processor changed.

Exit status: 0 when every run in both agrees in every compared field, 1 when some differ, 2 on bad input.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

from bnexp.errors import UserError
from bnexp.store import RECORDS_FILE, read_records

# Fields that differ between runs of the same code and config: process, machine and provenance.
NOT_COMPARED = frozenset({"wall_s", "child_s", "peak_rss_mb", "started_at", "git_commit", "git_clean", "device",
                          "keras_backend", "keras", "fingerprint", "proc.pid", "base_cache_hit", "nobn_from_cache",
                          "cpu", "onednn", "tensorflow"})


def compared(record: dict) -> dict:
    """The record without timings and NOT_COMPARED."""
    return {k: v for k, v in record.items() if k not in NOT_COMPARED and not k.endswith(("_s", "_per_s"))}


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same(a, b) -> bool:
    return (_missing(a) and _missing(b)) or a == b


def differences(a: dict, b: dict) -> dict[str, tuple]:
    """{field: (a's value, b's value)} for each field where two compared() records differ."""
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if not same(a.get(k), b.get(k))}


def load(path: str) -> tuple[Path, dict[tuple[str, str], dict]]:
    """The records file `path` names (itself, or RECORDS_FILE inside a folder), keyed by (scenario, run id)."""
    file = Path(path)
    if file.is_dir():
        file = file / RECORDS_FILE
    if not file.is_file():
        raise UserError(f"compare: {path} is neither a records file nor a folder holding {RECORDS_FILE}")
    try:
        records = read_records(file)
    except (OSError, EOFError, ValueError, zlib.error) as e:  # a bad gzip header is an OSError
        raise UserError(f"compare: {file} is not a gzipped JSON-lines records file ({type(e).__name__}: {e})") from e
    return file, {(r.get("scenario"), r.get("run_id")): r for r in records}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise UserError("compare takes two records files or results folders: bnexp compare A B")
    (file_a, a), (file_b, b) = load(argv[0]), load(argv[1])
    both = sorted(a.keys() & b.keys())
    print(f"A: {file_a} ({len(a)} runs); B: {file_b} ({len(b)} runs); {len(both)} runs in both, "
          f"{len(a.keys() - b.keys())} only in A, {len(b.keys() - a.keys())} only in B")
    pairs = {key: (compared(a[key]), compared(b[key])) for key in both}
    fields = set().union(*(ca.keys() | cb.keys() for ca, cb in pairs.values()))
    differing: dict[str, list] = {}
    for key, (ca, cb) in pairs.items():
        for field, values in differences(ca, cb).items():
            differing.setdefault(field, []).append((key, values))
    if not differing:
        print(f"every one of the {len(fields)} compared fields is equal in all {len(both)} runs in both "
              f"(timings and {', '.join(sorted(f for f in NOT_COMPARED if not f.endswith('_s')))} left out)")
        return 0
    runs = {key for rows in differing.values() for key, _ in rows}
    print(f"{len(differing)} of {len(fields)} compared fields differ, in {len(runs)} of {len(both)} runs:")
    width = max(map(len, differing))
    for field, rows in sorted(differing.items(), key=lambda item: (-len(item[1]), item[0])):
        (scenario, run_id), (va, vb) = rows[0]
        print(f"  {field:<{width}}  {len(rows):>5} runs; e.g. {scenario} {run_id}: {va!r} (A) vs {vb!r} (B)")
    return 1
