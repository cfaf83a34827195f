"""Every run knows the code that made it (``sdexp.provenance``), in a temporary clone of this
checkout where a commit changes the code between two sweeps: the planner names the runs of the
older code and skips them (the code is not part of a run's identity), ``sdexp-table`` refuses to
put both codes into one cell unless asked, ``rerun_other_code=true`` runs them again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import ROOT, user_env

SWEEP = ["+sweep=smoke", "mode=uniform", "budget=0.3", "seed=0,1", "logger=none"]


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=sdexp tests", "-c", "user.email=tests@sdexp"]
    done = subprocess.run(["git", *identity, "-C", str(repo), *args], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().strip()


def clone_under_test(into: Path) -> Path:
    """A clone of this checkout, with its uncommitted changes and new files committed: the code
    under test, in a repository of its own."""
    git(ROOT.parent, "clone", "-q", "--no-hardlinks", str(ROOT), str(into))
    diff = subprocess.run(["git", "-C", str(ROOT), "diff", "HEAD", "--binary"], capture_output=True)
    if diff.stdout:
        applied = subprocess.run(["git", "-C", str(into), "apply", "--binary"], input=diff.stdout)
        assert applied.returncode == 0
    for name in git(ROOT, "ls-files", "--others", "--exclude-standard").splitlines():
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes((ROOT / name).read_bytes())
    git(into, "add", "-A")
    git(into, "commit", "-q", "--allow-empty", "-m", "the code under test")
    return into


def in_clone(clone: Path, *args: str) -> subprocess.CompletedProcess:
    """``python ARGS`` in the clone, on its code: ``sdexp`` from the clone's PYTHONPATH. The
    configs come from ``--config-path`` (train.py), since an editable install of this checkout
    maps the package ``sdexp.conf`` to this checkout's conf/."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=clone,
        capture_output=True,
        text=True,
        env=user_env(PYTHONPATH=str(clone)),
        timeout=600,
    )


def sweep(clone: Path, sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    config = ["--config-path", str(clone / "conf")]
    return in_clone(clone, "train.py", *config, *SWEEP, f"hydra.sweep.dir={sweep_dir}", *overrides)


def results(sweep_dir: Path) -> dict[int, dict]:
    """Each run's results.json (as strict JSON), by seed."""
    found = {}
    for path in sweep_dir.rglob("results.json"):
        data = json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(token))
        found[data["seed"]] = data | {"path": path, "bytes": path.read_bytes()}
    return found


@pytest.mark.slow
def test_runs_of_older_code_are_named_kept_apart_and_run_again(tmp_path):
    clone = clone_under_test(tmp_path / "clone")
    probe = in_clone(clone, "-c", "import sdexp; print(sdexp.__file__)")
    assert probe.stdout.strip() == str(clone / "sdexp" / "__init__.py")
    older = git(clone, "rev-parse", "HEAD")
    sweep_dir = tmp_path / "sweep"

    first = sweep(clone, sweep_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    before = results(sweep_dir)
    assert sorted(before) == [0, 1]
    old_tree = before[0]["code"]["tree"]
    for run in before.values():
        code = {"commit": older, "dirty": False, "diff": None, "version": "0.1.0"}
        assert run["code"] == code | {"tree": old_tree} and len(old_tree) == 12
        hydra = yaml.safe_load((run["path"].parent / ".hydra" / "hydra.yaml").read_text())
        sources = {s["provider"]: s["path"] for s in hydra["hydra"]["runtime"]["config_sources"]}
        assert sources["main"] == str(clone / "conf")  # the clone's configs

    # A commit of the docs only is the same code: the runs are its runs.
    (clone / "README.md").write_text("Another README.\n")
    git(clone, "commit", "-q", "-am", "docs")
    docs = sweep(clone, sweep_dir)
    assert "2 already done (skipped), 0 to launch" in docs.stdout
    assert "other code" not in docs.stdout

    # A change of the code that changes the numbers: He init scaled by 1/2, committed.
    models = clone / "sdexp" / "models.py"
    he_init = "std=math.sqrt(2.0 / in_features)"
    assert he_init in models.read_text()
    models.write_text(models.read_text().replace(he_init, "std=0.5 * math.sqrt(2.0 / in_features)"))
    git(clone, "commit", "-q", "-am", "He init scaled by 1/2")
    newer = git(clone, "rev-parse", "HEAD")
    code = "from sdexp.provenance import current_code; print(current_code().tree)"
    new_tree = in_clone(clone, "-c", code).stdout.strip()
    this = f"code {new_tree} (commit {newer[:7]})"

    again = sweep(clone, sweep_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already done (skipped), 0 to launch" in again.stdout
    assert (
        f"2 finished runs came from other code than this, {this} (2 by code "
        f"{old_tree}): count as done (a run's identity is its config, not its code): "
        "rerun_other_code=true runs them again from scratch"
    ) in again.stdout
    for run in before.values():  # each named on its line, and untouched
        line = f"-> {run['path'].parent}  (made by other code: code {old_tree})"
        assert line in again.stdout
    assert {s: r["bytes"] for s, r in results(sweep_dir).items()} == {
        s: r["bytes"] for s, r in before.items()
    }

    one = sweep(clone, sweep_dir, "seed=1", "rerun_other_code=true")
    assert one.returncode == 0, one.stderr[-3000:]
    assert (
        f"made by other code (code {old_tree}): its results.json and checkpoints are "
        "discarded, and it trains again (rerun_other_code=true)"
    ) in one.stdout
    after = results(sweep_dir)
    assert after[0]["bytes"] == before[0]["bytes"]  # only the run asked for
    assert after[1]["code"]["commit"] == newer and after[1]["test"] != before[1]["test"]
    assert not list(sweep_dir.rglob("*.tmp"))

    out = tmp_path / "table"
    refused = in_clone(clone, "-m", "sdexp.analysis.cli", str(sweep_dir), "--out", str(out))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: --mix-code: a cell of a table holds runs of different code:")
    assert f"1 by code {old_tree}, 1 by code {new_tree}" in line
    assert "rerun_other_code=true" in line and "pass --mix-code" in line
    assert not out.exists()  # nothing written

    mixed = in_clone(
        clone, "-m", "sdexp.analysis.cli", str(sweep_dir), "--out", str(out), "--mix-code"
    )
    assert mixed.returncode == 0, mixed.stderr[-3000:]
    runs = pd.read_csv(out / "runs.csv").set_index("seed")
    assert (runs.loc[0, "run_commit"], runs.loc[1, "run_commit"]) == (older, newer)
    assert not runs.run_dirty.any() and set(runs.table_commit) == {f"commit {newer[:7]}"}

    rest = sweep(clone, sweep_dir, "rerun_other_code=true")
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert "1 already done (skipped), 1 to launch" in rest.stdout
    assert {r["code"]["commit"] for r in results(sweep_dir).values()} == {newer}
    table = in_clone(clone, "-m", "sdexp.analysis.cli", str(sweep_dir), "--out", str(out))
    assert table.returncode == 0, table.stderr[-3000:]
