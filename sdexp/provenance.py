"""The code that made a run (``Code``): the commit of sdexp's checkout, the git tree of its code
(``CODE_PATHS``), whether and how it differed from the commit, and the package version.

Two runs came from the same code when tree, uncommitted changes and version agree (``Code.key``),
whatever the commit (a commit of docs or tests only is the same code). The code is recorded in
``results.json``, checkpoints and W&B but is **not** part of a run's identity: a refactor that
changes no number must not retrain a grid. Read once per process, by git calls bounded by
``GIT_TIMEOUT_S``; what git cannot answer is recorded as such and never fails a run.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from sdexp import __version__

#: A commit git could not tell (no git, too slow, a repository it refuses).
UNKNOWN = "unknown"

#: Seconds each git call may take (a checkout on a slow network file system).
GIT_TIMEOUT_S = 10.0

PACKAGE = Path(__file__).resolve().parent

#: What a run's numbers come from, relative to the checkout's top (``Code.tree``).
CODE_PATHS = ("sdexp", "conf", "hydra_plugins", "train.py")


@dataclass(frozen=True)
class Code:
    """The code that made a run (or a table)."""

    commit: str | None  # HEAD of sdexp's checkout; None: not a checkout (an installed wheel)
    dirty: bool | None = None  # the code differs from that commit (None: unknown)
    diff: str | None = None  # the first 12 hex digits of sha256(git diff HEAD -- code), if dirty
    version: str = __version__  # the package's version
    tree: str | None = None  # 12 hex digits of the code's git trees at that commit

    @property
    def key(self) -> str:
        """What tells two codes apart: the tree and uncommitted changes (outside a checkout: the
        version); not the commit."""
        if self.tree is None:
            return self.label
        return f"code {self.tree}" + (f" + uncommitted changes {self.diff}" if self.dirty else "")

    @property
    def label(self) -> str:
        """``commit 1a2b3c4`` (``+ uncommitted changes 5e6f7a8b9c0d``), or ``version 0.1.0``
        outside a checkout (``(commit unknown)`` where git could not tell)."""
        if self.commit is None or self.commit == UNKNOWN:
            unknown = " (commit unknown)" if self.commit == UNKNOWN else ""
            return f"version {self.version}{unknown}"
        changes = f" + uncommitted changes {self.diff}" if self.dirty else ""
        return f"commit {self.commit[:7]}{changes}"

    def to_dict(self) -> dict:
        return asdict(self)


NOT_RECORDED = "code not recorded"


def code_label(code: Code | None) -> str:
    """``code.key``, or ``NOT_RECORDED`` for a run that recorded none."""
    return NOT_RECORDED if code is None else code.key


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
        paths = [p for p in CODE_PATHS if (PACKAGE.parent / p).exists()]
        trees = git("rev-parse", *(f"HEAD:{p}" for p in paths))
        top_paths = (f":(top){p}" for p in paths)
        diff = git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-color", "--", *top_paths)
    except (OSError, subprocess.TimeoutExpired, ValueError):  # no git, too slow, odd output
        return Code(UNKNOWN)
    tree = hashlib.sha256(trees.stdout).hexdigest()[:12] if trees.returncode == 0 else None
    if diff.returncode != 0:
        return Code(commit, None, tree=tree)
    dirty = bool(diff.stdout)
    digest = hashlib.sha256(diff.stdout).hexdigest()[:12] if dirty else None
    return Code(commit, dirty, digest, tree=tree)


#: The code of this process, read once.
current_code = functools.cache(read_code)


def this_code() -> str:
    """This process's code, as the messages name it: its key, and its commit where it has one."""
    code = current_code()
    return code.key if code.key == code.label else f"{code.key} ({code.label})"


def other_code(code: Code | None) -> str | None:
    """``code_label(code)`` if ``code`` (what a run recorded) is not this process's code, else
    None."""
    return None if code is not None and code.key == current_code().key else code_label(code)
