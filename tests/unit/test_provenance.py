"""The code that made a run (``sdexp.provenance``): read from real git repositories made here, and
what it records without git or outside a checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sdexp import __version__, provenance
from sdexp.provenance import UNKNOWN, Code, code_label, read_code


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    done = subprocess.run(
        ["git", *identity, "-C", str(repo), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """A git repository with a package ``sdexp/`` at its top, one commit; ``read_code`` reads it."""
    repo = tmp_path / "checkout"
    (repo / "sdexp").mkdir(parents=True)
    (repo / "sdexp" / "models.py").write_text("SCALE = 1.0\n")
    (repo / "README.md").write_text("readme\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "PACKAGE", repo / "sdexp")
    return repo


def test_a_clean_checkout_records_its_commit_and_its_codes_tree(checkout):
    code = read_code()
    assert (code.commit, code.dirty, code.diff) == (git(checkout, "rev-parse", "HEAD"), False, None)
    assert code.version == __version__ and len(code.tree) == 12
    assert code.label == f"commit {code.commit[:7]}" and code.key == f"code {code.tree}"


def test_uncommitted_changes_to_tracked_files_are_hashed(checkout):
    (checkout / "sdexp" / "models.py").write_text("SCALE = 0.5\n")
    first = read_code()
    assert first.dirty and len(first.diff) == 12
    assert first.label == f"commit {first.commit[:7]} + uncommitted changes {first.diff}"
    (checkout / "sdexp" / "models.py").write_text("SCALE = 0.25\n")
    assert read_code().diff != first.diff  # other changes, another hash
    (checkout / "notes.txt").write_text("untracked")  # not tracked: not the code
    (checkout / "README.md").write_text("other words\n")  # tracked, but not the code
    (checkout / "sdexp" / "models.py").write_text("SCALE = 1.0\n")
    assert read_code() == Code(first.commit, False, None, tree=first.tree)


def test_a_commit_of_the_code_is_other_code_one_of_the_docs_is_not(checkout):
    before = read_code()
    (checkout / "README.md").write_text("other words\n")
    git(checkout, "commit", "-q", "-am", "docs")
    docs = read_code()
    assert docs.commit != before.commit and code_label(docs) == code_label(before)
    (checkout / "sdexp" / "models.py").write_text("SCALE = 0.5\n")
    git(checkout, "commit", "-q", "-am", "scale")
    after = read_code()
    assert after.commit != docs.commit and not after.dirty
    assert code_label(before) != code_label(after) and code_label(None) == "code not recorded"


def test_outside_a_checkout_the_version_stands_for_the_commit(tmp_path, monkeypatch):
    """An installed wheel: its directory is no git checkout, or lies inside another repository
    (a virtual environment in a project's folder) that does not track it."""
    alone = tmp_path / "site-packages" / "sdexp"
    alone.mkdir(parents=True)
    monkeypatch.setattr(provenance, "PACKAGE", alone)
    assert read_code() == Code(None) and read_code().label == f"version {__version__}"
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "a project around the install")
    assert read_code() == Code(None)


def test_without_git_the_commit_is_unknown_and_the_run_goes_on(checkout, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git to run
    assert read_code() == Code(UNKNOWN)
    assert read_code().label == f"version {__version__} (commit unknown)"


def test_a_git_that_never_answers_is_bounded(checkout, tmp_path, monkeypatch):
    """A git stuck on a dead network file system: the call gives up after GIT_TIMEOUT_S."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f"#!{shutil.which('bash')}\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.5)
    assert read_code() == Code(UNKNOWN)
