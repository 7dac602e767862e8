"""bnexp.atomic: a reader sees the old file or the whole new one, and a failed write leaves no trace."""

import pytest

from bnexp.atomic import atomic_open, write_text


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "a.json"
    write_text(path, "old")
    write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_a_failed_write_keeps_the_old_content_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "a.npz"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write(b"half")
            raise RuntimeError("killed midway")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]
