"""The code that made a run: the commit of the checkout sdexp was imported from, whether its
tracked files differed from that commit, a hash of the difference, and the package version.

A run records it (``Code``) in ``results.json``, in every checkpoint beside its identity and in
W&B's config; ``sdexp-table`` names its own in every file it writes. The code is **not** part of a
run's identity (``sdexp.results``): a refactor that changes no number must not retrain a grid.
What the code decides instead: the sweep planner names the finished runs that other code made
(``rerun_other_code=true`` runs them again), and ``sdexp-table`` refuses to put runs of two codes
into one cell of a table unless asked (``--mix-code``).

Read once per process (``current_code``) with two git calls, each bounded by ``GIT_TIMEOUT_S``;
whatever git cannot answer is recorded as such and never fails a run.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from sdexp import __version__

#: A commit git could not tell: no git on the PATH, an answer too slow, a repository it refuses.
UNKNOWN = "unknown"

#: Seconds each git call may take (a checkout on a slow network file system).
GIT_TIMEOUT_S = 10.0

#: The checkout sdexp's code lies in when it runs from one (sdexp/ at its top).
PACKAGE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Code:
    """The code that made a run (or a table)."""

    commit: str | None  # HEAD of sdexp's checkout; None: not a checkout (an installed wheel)
    dirty: bool | None = None  # the tracked files differ from that commit (None: unknown)
    diff: str | None = None  # the first 12 hex digits of sha256(git diff HEAD), when dirty
    version: str = __version__  # the package's version

    @property
    def label(self) -> str:
        """``commit 1a2b3c4``, ``commit 1a2b3c4 + uncommitted changes 5e6f7a8b9c0d``, or
        ``version 0.1.0`` outside a checkout (``(commit unknown)`` where git could not tell)."""
        if self.commit is None or self.commit == UNKNOWN:
            unknown = " (commit unknown)" if self.commit == UNKNOWN else ""
            return f"version {self.version}{unknown}"
        changes = f" + uncommitted changes {self.diff}" if self.dirty else ""
        return f"commit {self.commit[:7]}{changes}"

    def to_dict(self) -> dict:
        return asdict(self)


#: What a run written before runs recorded their code is labelled.
NOT_RECORDED = "code not recorded"


def code_label(code: Code | None) -> str:
    """``code.label``, or ``NOT_RECORDED`` for a run that recorded none: what tells two codes
    apart (the commit and the uncommitted changes, or the version outside a checkout)."""
    return NOT_RECORDED if code is None else code.label


def git(*args: str) -> subprocess.CompletedProcess:
    """``git -C <sdexp's directory> ARGS``, bounded by ``GIT_TIMEOUT_S``."""
    command = ["git", "-C", str(PACKAGE), *args]
    return subprocess.run(command, capture_output=True, timeout=GIT_TIMEOUT_S, check=False)


def read_code() -> Code:
    """The code of this process, read from git now (``current_code`` reads it once)."""
    try:
        top = git("rev-parse", "--show-toplevel", "HEAD")
        if top.returncode != 0:
            outside = b"not a git repository" in top.stderr
            return Code(None if outside else UNKNOWN)
        root, commit = top.stdout.decode().split()
        if Path(root).resolve() != PACKAGE.parent:  # an install inside another repository
            return Code(None)
        diff = git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-color")
    except (OSError, subprocess.TimeoutExpired, ValueError):  # no git, too slow, odd output
        return Code(UNKNOWN)
    if diff.returncode != 0:
        return Code(commit, None)
    dirty = bool(diff.stdout)
    return Code(commit, dirty, hashlib.sha256(diff.stdout).hexdigest()[:12] if dirty else None)


@functools.cache
def current_code() -> Code:
    """The code of this process, read once (``read_code``)."""
    return read_code()


def other_code(code: Code | None) -> str | None:
    """``code_label(code)`` if ``code`` (what a run recorded) is not this process's code: another
    commit, other uncommitted changes, another version or none recorded; else None."""
    return None if code == current_code() else code_label(code)
