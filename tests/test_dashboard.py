"""``sdexp-dashboard`` as a user runs it: the report's specification from ``--dry-run``, its keys
held to what a run's result gives W&B (``RunResult``), checked against the keys a real smoke
sweep logged offline (read back here, by wandb's own reader), and the one-line failure without a
server."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from wandb_workspaces import expr

from sdexp import report
from sdexp.report import build_report, runset_reads, specification
from sdexp.results import RunKey, RunResult
from tests.conftest import run_train

DASHBOARD = Path(sys.executable).with_name("sdexp-dashboard")  # the installed console script
REPORT = ["--entity", "someone", "--project", "sdexp", "--group", "smoke"]


def dashboard(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DASHBOARD), *args], capture_output=True, text=True, timeout=300, env=env
    )


def dry_run(tmp_path: Path, *args: str) -> dict:
    spec = tmp_path / "spec.json"
    done = dashboard(*REPORT, "--dry-run", str(spec), *args)
    assert done.returncode == 0, done.stderr
    return json.loads(spec.read_text())


# --- the keys real runs logged, read back from their files, and the runs a run set keeps --------


def value(run: dict, key: expr.Key):
    """A run's value for a filter key (``read_run``'s sections; config keys are dotted paths
    into the nested config)."""
    if key.section == "config":
        found = run["config"]
        for part in key.name.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return found
    return run.get(key.section, {}).get(key.name)


def selects(filters: expr.Filters, run: dict) -> bool:
    """Whether a run set's filter tree (as wandb-workspaces parses it) keeps ``run``: the
    operators the report's run sets use (``build_report``)."""
    if filters.key is None:
        kept = [selects(child, run) for child in filters.filters or []]
        return all(kept) if filters.op == "AND" else any(kept)
    found = value(run, filters.key)
    tests = {
        "=": lambda: found == filters.value,
        "!=": lambda: found != filters.value,
        "IN": lambda: found in filters.value,
        "NIN": lambda: found not in filters.value,
    }
    return tests[filters.op]()


def unresolved(spec: dict, runs: list[dict]) -> dict[str, list[str]]:
    """Per run set of ``spec``, the keys it reads that none of the runs it selects logged
    (``runs`` as from :func:`read_run`); W&B's own run attributes (``run:...``) always resolve.
    A run set is checked against its own runs: the failed runs' ``reason`` is not a key of
    finished runs, nor the finished runs' curves one of failed runs. A run set that selects
    none of ``runs`` is not in the answer (:func:`unchecked`)."""
    missing = {}
    for name, keys in runset_reads(spec).items():
        logged = set().union(*(run["keys"] for run in selected(spec, name, runs)))
        gaps = sorted(k for k in keys if not k.startswith("run:") and k not in logged)
        if logged and gaps:
            missing[name] = gaps
    return missing


def unchecked(spec: dict, runs: list[dict]) -> list[str]:
    """The run sets of ``spec`` that select none of ``runs`` (the failed runs of a sweep where
    none failed): what they read cannot be checked against these runs."""
    return [r["name"] for r in spec["runsets"] if not selected(spec, r["name"], runs)]


def selected(spec: dict, name: str, runs: list[dict]) -> list[dict]:
    """The runs that the run set ``name`` of ``spec`` keeps."""
    [runset] = [r for r in spec["runsets"] if r["name"] == name]
    tree = expr.expr_to_filters(runset["filters"])
    return [run for run in runs if selects(tree, run)]


def run_directories(root: str | Path) -> list[Path]:
    """The W&B run directories (``offline-run-*``, ``run-*``) under ``root``."""
    found = Path(root).rglob("*run-*")
    return sorted(p for p in found if p.is_dir() and any(p.glob("*.wandb")))


def inspect(run_dir: Path, *flags: str) -> str:
    """``wandb leet inspect FLAGS RUN_DIR``: wandb's documented reader of a run's ``.wandb`` log."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(run_dir)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def flatten(config: dict, prefix: str = "") -> Iterable[str]:
    """Nested config keys joined with dots: ``{"key": {"mode": ...}}`` gives ``key.mode``."""
    for name, value in config.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def read_run(run_dir: Path) -> dict:
    """What a report sees of one W&B run, read from its files: its attributes (``run``: group
    and state), ``summary`` and ``config`` (as run set filters read them), and ``keys``, every
    key it logged as ``section:name``: config (flattened with dots), summary, history and the
    columns of the tables in the summary (``table:KEY#COLUMN``).

    ``wandb leet inspect --summary --json`` gives the state, config and summary but not which
    keys were history rows; ``wandb leet inspect --json`` prints every record of the log (the
    run record with its group, history rows), with nested values flattened with dots (a
    table's ``key._type``): such a key is read as its longest dotted prefix in the summary.
    """
    state = json.loads(inspect(run_dir, "--summary", "--json"))
    config = {k: v for k, v in state["config"].items() if k != "_wandb"}
    summary = {k: v for k, v in state["summary"].items() if not k.startswith("_")}
    keys = {f"config:{k}" for k in flatten(config)} | {f"summary:{k}" for k in summary}
    for name, value in summary.items():
        if isinstance(value, dict) and value.get("_type") == "table-file":
            table = json.loads((run_dir / "files" / value["path"]).read_text())
            keys |= {f"table:{name}#{column}" for column in table["columns"]}
    group = None
    for line in inspect(run_dir, "--json").splitlines():
        record = json.loads(line)
        if record.get("type") == "run":
            group = record["run"].get("run_group")
        if record.get("type") == "history":
            keys |= {f"history:{history_key(k, summary)}" for k in record["history"]["item"]}
    return {
        "run": {"group": group, "state": state["state"]},
        "summary": summary,
        "config": config,
        "keys": {k for k in keys if not k.split(":", 1)[1].startswith("_")},
    }


def history_key(flat: str, summary: dict) -> str:
    """The logged key behind a flattened history key: its longest dotted prefix in the summary."""
    parts = flat.split(".")
    prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
    return next((p for p in prefixes if p in summary), flat)


# --- the report's keys against what a run gives W&B --------------------------------------------


def test_the_report_reads_what_a_runs_result_gives_wandb():
    """Every key the report reads of a run's summary and of its result's history row is one that
    ``RunResult.summary`` and ``history_row`` give W&B (the other keys: the per-layer tables
    and Lightning's training curves), and its config keys are the run key's (``key.*``)."""
    key = RunKey("toy", "vanilla", "uniform", 0.5, 0, "toy", 1, True, 8, "1" * 16, "2" * 16)
    result = RunResult(key, {}, "ok", metric="mse", test_final=0.1, epoch_times_s=[1.0, 2.0])
    summary, row = result.summary(), result.history_row()
    assert set(report.SUMMARY.values()) <= set(summary)
    read: dict[str, set[str]] = {}
    for keys in runset_reads(specification(build_report("e", "p", "g", "mse"))).values():
        for key_ in keys:
            section, name = key_.split(":", 1)
            read.setdefault(section, set()).add(name)
    assert read["summary"] - set(summary) == {"layers/survival_table", "layers/sensitivity_table"}
    curves = {"trainer/global_step", "epoch", "train/loss", "val/mse"}  # Lightning's rows
    assert read["history"] - set(row) == curves and set(row) <= read["history"]
    assert read["config"] <= {f"key.{f.name}" for f in dataclasses.fields(RunKey)}
    assert RunResult(key, {}, "failed", reason="a reason").history_row() is None


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> Path:
    """Under one directory, the smoke sweep for seed 0 (6 runs, all ok: ``healthy/``) and, in
    the same W&B group, a sweep of one run that fails (its loss diverges: ``failed/``), all
    logged to W&B offline."""
    root = tmp_path_factory.mktemp("dashboard")
    done = run_train(
        "+sweep=smoke", "seed=0", "logger=wandb", f"hydra.sweep.dir={root / 'healthy'}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    diverges = ["mode=uniform", "budget=0.7", "seed=1", "optimizer.lr=1e4"]
    done = run_train(
        "+sweep=smoke",
        *diverges,
        "trainer.log_every_n_steps=1",
        f"hydra.sweep.dir={root / 'failed'}",
    )
    assert done.returncode == 1, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def runs(sweeps) -> dict[Path, dict]:
    """What a report sees of each run of ``sweeps``, read once from their files."""
    return {path: read_run(path) for path in run_directories(sweeps)}


@pytest.mark.slow
def test_a_healthy_smoke_sweep_logs_every_key_the_report_reads(sweeps, tmp_path):
    """README's smoke sweep where every run is ok: the failed runs' run set (``reason``) has no
    run to check; every other run set's keys are logged by its runs."""
    spec = dry_run(tmp_path, "--metric", "mse")
    healthy = [read_run(path) for path in run_directories(sweeps / "healthy")]
    assert len(healthy) == 6
    assert unresolved(spec, healthy) == {} and unchecked(spec, healthy) == ["failed runs"]


@pytest.mark.slow
def test_every_key_the_report_reads_is_logged_by_the_runs_it_shows(runs, tmp_path):
    spec = dry_run(tmp_path, "--metric", "mse")
    assert len(runs) == 7
    read = list(runs.values())
    assert unresolved(spec, read) == {} and unchecked(spec, read) == []
    # a key that no run logs is named in each run set that reads it
    less = [run | {"keys": run["keys"] - {"history:budget", "summary:reason"}} for run in read]
    assert unresolved(spec, less) == {
        "finished runs": ["history:budget"],
        "failed runs": ["summary:reason"],
    }
    # --metric error: the toy runs log no val/error
    error = dry_run(tmp_path)
    assert unresolved(error, read) == {"finished runs by mode and budget": ["history:val/error"]}
    # the finished runs alone: the failed runs' run set is not checked, nothing is missing
    ok = [run for run in read if run["summary"]["status"] == "ok"]
    assert unresolved(spec, ok) == {} and unchecked(spec, ok) == ["failed runs"]
    # the failed run (no training curve, no per-layer table) does not stand in for them
    failed = [run for run in read if run["summary"]["status"] == "failed"]
    assert unresolved(spec, failed) == {} and "finished runs" in unchecked(spec, failed)


@pytest.mark.slow
def test_failed_runs_are_in_no_panel_and_in_their_own_run_set(runs, tmp_path):
    spec = dry_run(tmp_path, "--metric", "mse")
    status = {path: run["summary"]["status"] for path, run in runs.items()}
    assert sorted(status.values()) == ["failed"] + ["ok"] * 6
    for runset in spec["runsets"]:
        tree = expr.expr_to_filters(runset["filters"])
        kept = {path for path, run in runs.items() if selects(tree, run)}
        if runset["name"] == "failed runs":
            assert {status[p] for p in kept} == {"failed"} and len(kept) == 1
        elif runset["name"] == "no-SD baseline":
            assert [runs[p]["summary"]["mode"] for p in kept] == ["none"]
        else:
            assert kept == {p for p in runs if status[p] == "ok"}, runset["name"]
    # a run of another sweep is in no run set
    stranger = next(iter(runs.values())) | {"run": {"group": "other", "state": "finished"}}
    assert not any(selects(expr.expr_to_filters(r["filters"]), stranger) for r in spec["runsets"])


def test_the_report_has_every_panel_of_issue_11(tmp_path):
    spec = dry_run(tmp_path)
    panels = spec["panels"]
    runsets = {runset["name"]: runset for runset in spec["runsets"]}
    assert len(runsets) == len(spec["runsets"])  # panels name their run set
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
