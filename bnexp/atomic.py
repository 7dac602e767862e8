"""Atomic file writes, for both sides of the process boundary (no TensorFlow here).

A reader sees the old file, or the whole new one, never a part: the content goes to a temp file beside
the target, is flushed to disk (fsync), then renamed over the target (atomic on POSIX). A writer killed
midway leaves only a dot-prefixed `.tmp` file that nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """`with atomic_open(path) as f: ...` writes `path` atomically when the block ends without error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace `path`'s content by `text`, atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)
