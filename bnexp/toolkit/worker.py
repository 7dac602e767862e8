"""A warm worker: `python -m bnexp.toolkit.worker`, one process that runs run after run.

Started by bnexp.workers with the environment of one kind of semantics (see bnexp.workers.KINDS), it
reads one run folder per line on stdin, runs it with bnexp.toolkit.child.run_one (the same code as a
fresh `python -m bnexp.toolkit.child RUN_DIR`, which resets the framework's state first) while its
stdout and stderr, file descriptors included (TensorFlow's C++ logs), go to that run's log.txt, and
answers with the run's status on one line of the original stdout. It exits at the end of stdin; the
parent recycles it after worker.max_runs runs, a run that was not ok, or a timeout.
"""

from __future__ import annotations

import os
import sys
import time


def run_logged(run_dir: str, n: int) -> str:
    """run_one(run_dir), this worker's run number `n`, with fds 1 and 2 pointed at run_dir/log.txt; the
    run's status."""
    from bnexp.toolkit.child import run_one

    started = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(os.path.join(run_dir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        print(f"bnexp: warm worker pid {os.getpid()}, its run {n}", flush=True)
        return run_one(run_dir, started=started)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (log, *saved):
            os.close(fd)


def main() -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel: nothing else writes to it
    os.dup2(2, 1)  # stray output between runs goes to the parent's stderr, never into an answer
    for n, line in enumerate(sys.stdin, start=1):
        try:
            status = run_logged(line.strip(), n)
        except OSError:  # the run's folder cannot take its log (disk full, read-only): the parent reports it
            status = "failed"
        answers.write(status + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
