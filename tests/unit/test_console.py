"""What a run prints and logs (``sdexp.run.console``; as a user sees it:
tests/e2e/test_console.py)."""

from __future__ import annotations

import logging

from sdexp.run.console import RunLogFile


def test_the_run_log_is_written_only_once_the_run_owns_its_directory(tmp_path):
    logger = logging.getLogger("tests.faults")
    handler = RunLogFile(str(tmp_path / "train.log"))
    logger.addHandler(handler)
    try:
        logger.warning("before the claim")
        assert not (tmp_path / "train.log").exists()  # a refused run writes nothing there
        handler.open_log()
        logger.warning("after the claim")
        assert (tmp_path / "train.log").read_text() == "before the claim\nafter the claim\n"
    finally:
        logger.removeHandler(handler)
        handler.close()
