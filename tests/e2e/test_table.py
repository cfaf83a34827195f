"""``sdexp-table`` as a user runs it (``python -m sdexp.analysis.cli``, this checkout's code) on
fabricated results: its command line, the files it writes naming their command and commit, the cost
table, W&B (the tables' contents: tests/unit/test_table.py, tests/unit/test_cost.py)."""

from __future__ import annotations

import json
import os
import subprocess
from importlib.metadata import entry_points

import pandas as pd
import pytest
from PIL import Image

from sdexp.analysis.cli import main
from sdexp.analysis.cost import UNKNOWN
from sdexp.tracking import dashboard
from tests.helpers import ROOT, copy_of, read_only, run_table, table_row, table_rows


def test_cli(sweep, tmp_path, capsys):
    """``sdexp-table`` (pyproject's console script, ``sdexp.analysis.cli:main``), run as
    ``python -m sdexp.analysis.cli`` so that it is this checkout's code."""
    done = run_table(str(sweep), "--out", str(tmp_path / "out"), "--small", "0.2", "--large", "0.8")
    assert done.returncode == 0, done.stderr
    assert table_row(done.stdout, "Uniform", "ours")[2] == "17.2 ± 0.3 (n=4)"
    verdict = (tmp_path / "out" / "verdict.md").read_text()
    (paired,) = [line for line in verdict.splitlines() if line.startswith("**Paired verdict:**")]
    assert paired in done.stdout.splitlines() and "at small budgets (b = 0.2) " in paired
    assert done.stdout.splitlines()[-1] == (
        f"Wrote {tmp_path / 'out' / 'table2.md'}, table2.csv, summary.csv, runs.csv, verdict.md, "
        f"verdict.csv, cost.md, cost.csv, 1 table plot(s) and 1 paired plot(s) to "
        f"{tmp_path / 'out'}"
    )
    usage = run_table("--help")
    assert usage.stdout.startswith("usage: sdexp-table [-h]"), usage.stdout
    (script,) = entry_points(group="console_scripts", name="sdexp-table")
    assert script.value == "sdexp.analysis.cli:main"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 2
    assert "no results.json or sweep.json under" in capsys.readouterr().err
    assert not any(empty.iterdir())
    with pytest.raises(SystemExit) as error:
        main([str(tmp_path / "nowhere")])
    assert error.value.code == 2 and "is neither a directory nor a runs.csv file" in (
        capsys.readouterr().err
    )


def test_every_file_names_its_command_and_commit(sweep, tmp_path):
    """The command as a shell line (quoted: it runs again as printed) and the checkout's commit,
    in every table, verdict and plot written."""
    out = tmp_path / "my tables"
    argv = [str(sweep), "--out", str(out)]
    assert main(argv) == 0
    command = f"sdexp-table {sweep} --out '{out}'"
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    commit = f"commit {head}" if head else "version "
    for name in ("table2.md", "verdict.md"):
        first = (out / name).read_text().splitlines()[0]
        assert first.startswith(f"Made by `{command}` with sdexp {commit}"), first
    for name in ("table2.csv", "summary.csv", "runs.csv", "verdict.csv"):
        frame = pd.read_csv(out / name)
        assert set(frame.command) == {command}, name
        assert frame.table_commit.nunique() == 1, name
        assert frame.table_commit[0].startswith(commit), name
    for png in out.glob("*.png"):
        assert Image.open(png).text["Description"].startswith(f"Made by `{command}`")
    assert len(list(out.glob("*.png"))) == 2


def test_logs_to_wandb(sweep, tmp_path, monkeypatch):
    """The tables, plots and verdicts as a W&B run: ``sdexp-dashboard --tables`` (W&B is the
    dashboard's; sdexp-table writes files)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    tables = ["--project", "sdexp", "--group", "table2_cifar10", "--tables", str(out)]
    assert dashboard.main(tables) == 0
    (run,) = (out / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
    inspect = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(inspect.stdout)["summary"]
    assert summary["verdict/comparisons"]["nrows"] == 2 + 9 + 5 + 5
    assert summary["verdict/markdown"] == (out / "verdict.md").read_text()


def test_logs_to_wandb_offline_when_the_server_is_down(sweep, tmp_path, monkeypatch, capsys):
    """Credentials, and nothing listening at the server's address: offline, like training."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    tables = ["--project", "sdexp", "--group", "table2_cifar10", "--tables", str(out)]
    assert dashboard.main(tables) == 0
    (run,) = (out / "wandb").glob("offline-run-*")
    assert f"W&B: logged the tables, plots and verdicts offline to {run}" in capsys.readouterr().out


@pytest.mark.slow
def test_the_table_shows_the_cost(cost_results, tmp_path):
    sweep = copy_of(cost_results, tmp_path / "sweep")
    done = run_table(str(sweep))
    assert done.returncode == 0, done.stderr
    rows = {row[1]: row for row in table_rows(done.stdout.split("### Cost")[1])}
    assert rows["NVIDIA H200"][2:] == ["8", "1.88", "0.125"]
    assert rows["NVIDIA H200"][0].startswith("cifar10, resnet110, 164 epochs, recipe reference")
    assert rows[UNKNOWN][2:] == ["1", "0.5", "0"]
    assert "times its device_share" in done.stdout
    made, text = (sweep / "cost.md").read_text().split("\n\n", 1)
    assert made.startswith("Made by `sdexp-table ") and text in done.stdout
    assert (sweep / "cost.csv").read_text().count("\n") == 1 + 3


def test_results_not_of_the_contract_are_named_and_left_out(sweep, tmp_path):
    """A string budget used to stop the table with a traceback, and an unknown status dropped a
    run from every count without a word: each is named in one warning line and left out, their
    count ends the last line, and the runs the sweep planned count as missing."""
    broken = {
        "budget=0.5,mode=uniform,seed=0": ("budget", "0.5"),
        "budget=0.5,mode=uniform,seed=1": ("status", "done"),
        "budget=0.5,mode=uniform,seed=2": ("seed", None),  # a field missing
        "budget=0.5,mode=uniform,seed=3": ("test_final", "6.9%"),
    }
    for name, (field, value) in broken.items():
        data = json.loads((sweep / name / "results.json").read_text())
        data.pop(field) if value is None else data.update({field: value})
        (sweep / name / "results.json").write_text(json.dumps(data))
    others = {p: p.read_bytes() for p in sweep.rglob("results.json")}
    out = tmp_path / "out"
    done = run_table(str(sweep), "--out", str(out))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = sorted(done.stderr.splitlines())
    assert lines == [
        f"warning: {sweep / 'budget=0.5,mode=uniform,seed=0' / 'results.json'}: unreadable "
        "(budget: input should be a valid number, got '0.5'); left out",
        f"warning: {sweep / 'budget=0.5,mode=uniform,seed=1' / 'results.json'}: unreadable "
        "(status: input should be 'ok' or 'failed', got 'done'); left out",
        f"warning: {sweep / 'budget=0.5,mode=uniform,seed=2' / 'results.json'}: unreadable "
        "(seed: field required); left out",
        f"warning: {sweep / 'budget=0.5,mode=uniform,seed=3' / 'results.json'}: unreadable "
        "(test_final: input should be a valid number, got '6.9%'); left out",
    ]
    assert done.stdout.splitlines()[-1].endswith("; left out 4 unreadable file(s), named above")
    assert table_row(done.stdout, "Uniform", "ours")[6] == "4 missing"  # b = 0.5: all four
    assert {p: p.read_bytes() for p in sweep.rglob("results.json")} == others  # untouched


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_an_out_that_cannot_be_written_is_one_line(sweep, tmp_path, where):
    """``--out`` under a regular file, or in a read-only place: it used to be a traceback."""
    if where == "under_a_file":
        (tmp_path / "file").write_text("a regular file")
        out, why = tmp_path / "file" / "tables", "Not a directory"
        done = run_table(str(sweep), "--out", str(out))
    else:
        out = tmp_path / "locked" / "tables"
        with read_only(tmp_path / "locked"):
            done = run_table(str(sweep), "--out", str(out))
        why = "Permission denied" if os.geteuid() else "Operation not permitted"
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.splitlines() == [f"error: --out: cannot write {out} ({why})"]
    assert not out.exists()
