"""A run directory's files (``sdexp.run.directory``; runs into directories:
tests/e2e/test_rundir.py)."""

from __future__ import annotations

from sdexp.run.directory import move_aside


def test_moving_aside_deletes_nothing(tmp_path):
    first, second = tmp_path / "last.ckpt", tmp_path / "last.ckpt"
    first.write_text("first")
    assert move_aside(first).name == "last.ckpt.unreadable"
    second.write_text("second")
    assert move_aside(second).name == "last.ckpt.unreadable.2"
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "last.ckpt.unreadable": "first",
        "last.ckpt.unreadable.2": "second",
    }
