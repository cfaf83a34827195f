"""``sdexp-dashboard`` as a user runs it: the report's specification from ``--dry-run``, checked
against the keys a real smoke sweep and a failed sweep logged offline (read back by wandb's own
reader: ``tests.helpers.read_run``), and the one-line failure without a server (the report's keys
against ``RunResult``: tests/unit/test_report.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_workspaces import expr

from tests.helpers import read_run, run_directories, selects, unchecked, unresolved

DASHBOARD = Path(sys.executable).with_name("sdexp-dashboard")  # the installed console script
REPORT = ["--entity", "someone", "--project", "sdexp", "--group", "smoke"]


def dashboard(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DASHBOARD), *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """``spec(metric)``: the report's specification from ``sdexp-dashboard ... --dry-run`` (with
    ``--metric mse``, or the default ``error``), made once per module and metric."""
    made = {}

    def get(metric: str) -> dict:
        if metric not in made:
            path = tmp_path_factory.mktemp("dashboard") / "spec.json"
            options = ["--metric", metric] if metric != "error" else []
            done = dashboard(*REPORT, "--dry-run", str(path), *options)
            assert done.returncode == 0, done.stderr
            made[metric] = json.loads(path.read_text())
        return made[metric]

    return get


@pytest.fixture(scope="module")
def runs(smoke_sweep, failed_sweep) -> dict[Path, dict]:
    """What a report sees of each run, read once from their files: README's smoke sweep for
    seed 0 (6 runs, all ok) and, in the same W&B group, the two runs of the session's
    ``failed_sweep`` (their loss diverges), all logged to W&B offline."""
    healthy = run_directories(smoke_sweep / "outputs" / "sweeps" / "smoke")
    seed_0 = [path for path in healthy if "-s0-" in path.parent.parent.name]
    return {path: read_run(path) for path in [*seed_0, *run_directories(failed_sweep)]}


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_every_key_the_report_reads_is_logged_by_the_runs_it_shows(runs, spec):
    mse = spec("mse")
    assert len(runs) == 8
    read = list(runs.values())
    assert unresolved(mse, read) == {} and unchecked(mse, read) == []
    # a key that no run logs is named in each run set that reads it
    less = [run | {"keys": run["keys"] - {"history:budget", "summary:reason"}} for run in read]
    assert unresolved(mse, less) == {
        "finished runs": ["history:budget"],
        "failed runs": ["summary:reason"],
    }
    # --metric error: the toy runs log no val/error
    error = spec("error")
    assert unresolved(error, read) == {"finished runs by mode and budget": ["history:val/error"]}
    # the finished runs alone: the failed runs' run set is not checked, nothing is missing
    ok = [run for run in read if run["summary"]["status"] == "ok"]
    assert unresolved(mse, ok) == {} and unchecked(mse, ok) == ["failed runs"]
    # the failed run (no training curve, no per-layer table) does not stand in for them
    failed = [run for run in read if run["summary"]["status"] == "failed"]
    assert unresolved(mse, failed) == {} and "finished runs" in unchecked(mse, failed)


@pytest.mark.slow
@pytest.mark.xdist_group("smoke")
def test_failed_runs_are_in_no_panel_and_in_their_own_run_set(runs, spec):
    mse = spec("mse")
    status = {path: run["summary"]["status"] for path, run in runs.items()}
    assert sorted(status.values()) == ["failed"] * 2 + ["ok"] * 6
    for runset in mse["runsets"]:
        tree = expr.expr_to_filters(runset["filters"])
        kept = {path for path, run in runs.items() if selects(tree, run)}
        if runset["name"] == "failed runs":
            assert {status[p] for p in kept} == {"failed"} and len(kept) == 2
        elif runset["name"] == "no-SD baseline":
            assert [runs[p]["summary"]["mode"] for p in kept] == ["none"]  # seed 0's
        else:
            assert kept == {p for p in runs if status[p] == "ok"}, runset["name"]
    # a run of another sweep is in no run set
    stranger = next(iter(runs.values())) | {"run": {"group": "other", "state": "finished"}}
    assert not any(selects(expr.expr_to_filters(r["filters"]), stranger) for r in mse["runsets"])


@pytest.mark.xdist_group("smoke")  # with the other tests of ``spec``: one dry run per metric
def test_the_report_has_every_panel_of_issue_11(spec):
    error = spec("error")
    panels = error["panels"]
    runsets = {runset["name"]: runset for runset in error["runsets"]}
    assert len(runsets) == len(error["runsets"])  # panels name their run set
    by_mode = {"by": "config:key.mode", "agg": "mean", "range": "stddev"}

    def find(kind: str, *keys: str) -> list[dict]:
        return [p for p in panels if p["type"] == kind and set(keys) <= set(p["keys"])]

    # test error, expected depth and epoch time against the budget: one line per mode, mean ± std
    for y in ("test", "expected_depth", "epoch_time_s"):
        [plot] = find("LinePlot", "history:budget", f"history:{y}")
        assert plot["grouping"] == by_mode, y
    # the no-SD baseline: mode none only, mean ± std over its seeds
    [scalar] = find("ScalarChart", "history:test")
    assert "summary:mode" in runsets[scalar["runset"]]["filter_keys"]
    assert "== 'none'" in runsets[scalar["runset"]]["filters"]
    # Table 2: the runs grouped by mode and budget, as a table and as bars with error bars
    cell = ["config:key.mode", "config:key.budget"]
    [bars] = find("BarPlot", "history:test")
    table = runsets[bars["runset"]]
    assert table["groupby"] == cell and table["runs_table"]
    assert {"summary:test", "summary:mode", "summary:budget"} <= set(table["columns"])
    assert bars["grouping"]["agg"] == "mean" and bars["grouping"]["range"] == "stddev"
    # survival and sensitivity per layer, from the tables wandb.plot.line logged
    for name in ("survival", "sensitivity"):
        table_key = f"layers/{name}_table"
        assert find("CustomChart", f"table:{table_key}#layer", f"table:{table_key}#{name}")
    # training curves, grouped by mode and budget
    for y in ("train/loss", "val/error"):
        [plot] = find("LinePlot", f"history:{y}")
        assert runsets[plot["runset"]]["groupby"] == cell
    # failed runs: in no other run set, listed (and so counted) with their reason in their own
    failed = runsets.pop("failed runs")
    assert failed["runs_table"] and "summary:reason" in failed["columns"]
    assert "summary:status" in failed["filter_keys"] and "run:state" in failed["filter_keys"]
    assert all("== 'ok'" in runset["filters"] for runset in runsets.values())
    assert all(p["runset"] in runsets for p in panels if p["type"] != "RunComparer")


def without_credentials(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {"HOME": str(home)}  # no ~/.netrc there


def test_without_credentials_it_says_so_in_one_line(tmp_path):
    done = dashboard(*REPORT, env=without_credentials(tmp_path))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == "sdexp-dashboard: no W&B credentials: run `wandb login` first"


@pytest.mark.slow
def test_without_a_server_it_fails_in_one_line(tmp_path):
    env = without_credentials(tmp_path) | {
        "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
        "WANDB_API_KEY": "0" * 40,
    }
    done = dashboard(*REPORT, env=env)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("sdexp-dashboard: could not save the report: ") and "127.0.0.1:9" in line
