"""Table 2 from results.json files: grouping, counting, the paper's layout, the plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sdexp.analysis.cli import main
from sdexp.analysis.per_budget import crossings
from sdexp.analysis.runs import RUNS_COLUMNS, collect
from sdexp.analysis.tables import paper_table, summarize, tables
from tests.helpers import BUDGETS, OFFSETS, PAPER, fake_run, table_row, table_rows


def test_the_papers_values_are_table_2():
    """The data file against the values typed from the paper for the verdict's tests."""
    paper = paper_table()
    assert list(paper.columns) == ["dataset", "model", "mode", "budget", "mean", "std"]
    assert set(zip(paper.dataset, paper.model, strict=True)) == {("cifar10", "resnet110")}
    for mode, (means, stds) in PAPER.items():
        rows = paper[paper["mode"] == mode].sort_values("budget")
        assert list(rows.budget) == BUDGETS
        assert [None if pd.isna(m) else m for m in rows["mean"]] == means  # NaN: the paper's "-"
        assert [None if pd.isna(s) else s for s in rows["std"]] == stds
    (baseline,) = paper[paper["mode"] == "none"].itertuples()
    assert (baseline.budget, baseline.mean, baseline.std) == (1.0, 6.37, 0.12)


def test_runs_are_counted_not_dropped(sweep):
    runs = collect([sweep]).frame
    assert len(runs) == (9 + 9 + 5) * 4 + 4
    assert runs.status.value_counts().to_dict() == {"ok": 94, "failed": 1, "missing": 1}
    summary = summarize(runs).set_index(["mode", "budget"])
    cell = summary.loc[("sensemode", 0.2)]
    assert (cell.n, cell.ok, cell.failed, cell.missing) == (2, 2, 1, 1)
    full = summary.loc[("uniform", 0.5)]
    assert full.n == 4 and full["mean"] == pytest.approx(6.8)
    assert full["std"] == pytest.approx(pd.Series(OFFSETS).std())  # sample std, ddof = 1
    assert (full.paper_mean, full.paper_std) == (6.8, 0.1)
    assert summary.loc[("none", 1.0)].paper_mean == 6.37


def test_a_run_found_twice_counts_once(sweep, tmp_path):
    copy = tmp_path / "copy"
    fake_run(copy, "uniform", 0.5, 0, 99.0, status="failed")  # the same run, failed elsewhere
    runs = collect([sweep, copy]).frame
    same = runs[(runs["mode"] == "uniform") & (runs.budget == 0.5) & (runs.seed == 0)]
    assert len(same) == 1 and same.iloc[0].status == "ok"


def test_table_has_the_papers_layout(sweep, capsys):
    assert main([str(sweep)]) == 0
    made, table = (sweep / "table2.md").read_text().split("\n\n", 1)
    assert made.startswith(f"Made by `sdexp-table {sweep}` with sdexp ")
    assert table in capsys.readouterr().out
    rows = table_rows(table)
    assert rows[0] == ["mode", "", *(f"b={b:g}" for b in BUDGETS), "b=1"]
    sense = table_row(table, "SenseMode", "ours")
    assert sense[2] == "15.4 ± 0.3 (n=4)" and sense[3].endswith("(n=2; 1 failed, 1 missing)")
    assert table_row(table, "SenseMode", "paper")[2:4] == ["15.4 ± 0.4", "9.3 ± 0.5"]
    assert table_row(table, "Linear", "ours")[2:7] == ["-", "-", "-", "-", "9.1 ± 0.3 (n=4)"]
    assert table_row(table, "Linear", "paper")[2:7] == ["-", "-", "-", "-", "9.1 ± 0.1"]
    # the baseline like the other rows (1 decimal), in its b = 1 column; the paper's as printed
    assert table_row(table, "No SD (b=1)", "ours")[2:] == [""] * 9 + ["6.4 ± 0.3 (n=4)"]
    assert table_row(table, "No SD (b=1)", "paper")[2:] == [""] * 9 + ["6.37 ± 0.12"]
    assert table_row(table, "Uniform", "ours")[-1] == ""
    assert [row[:2] for row in rows[1:]] == [
        [mode, source]
        for mode in ("SenseMode", "Uniform", "Linear", "No SD (b=1)")
        for source in ("ours", "paper")
    ]
    assert "Runs: 94 finished, 1 failed, 1 missing." in table
    assert (
        "SenseMode and Uniform cross: ours between b = 0.4 and 0.5; paper between b = 0.4 and 0.5."
        in table
    )

    csv = pd.read_csv(sweep / "table2.csv", keep_default_na=False)
    assert list(csv.columns[:2]) == ["mode", "Unnamed: 1"] or list(csv.columns[:1]) == ["mode"]
    assert csv.iloc[0, 2] == "15.4 ± 0.3 (n=4)"
    summary = pd.read_csv(sweep / "summary.csv")
    assert {"mode", "budget", "n", "mean", "std", "failed", "missing", "paper_mean"} <= set(
        summary.columns
    )
    png = sweep / "table2_cifar10_resnet110_164ep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_verdict_follows_the_table(sweep, capsys):
    """The paper's means (std 0.26 in every cell) agree with the Budget Hypothesis (Sec. 5)."""
    assert main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    verdict = (sweep / "verdict.md").read_text()
    lines = verdict.splitlines()
    sentence = next(line for line in lines if line.startswith("**Per budget (descriptive):**"))
    assert sentence.endswith(". This agrees with the Budget Hypothesis.")
    assert "the better mode switches between b = 0.4 and 0.5 (SenseMode to Uniform, " in sentence
    assert printed.index("Runs: 94 finished") < printed.index(sentence)
    rows = pd.read_csv(sweep / "verdict.csv")
    assert list(rows.test) == ["paired"] * 2 + ["welch"] * (9 + 5 + 5)
    assert rows.setup.nunique() == 1
    rows = rows[rows.test == "welch"]
    cell = rows[(rows.mode_a == "sensemode") & (rows.mode_b == "uniform") & (rows.budget == 0.2)]
    assert (cell.n_a.item(), cell.n_b.item()) == (2, 4)  # the failed and the missing run left out


def test_setups_get_their_own_tables(sweep, tmp_path, capsys):
    toy = tmp_path / "smoke"
    for seed in (0, 1):
        fake_run(toy, "uniform", 0.5, seed, 0.4 + seed / 10, dataset="toy", model="vanilla")
    assert main([str(sweep), str(toy), "--out", str(tmp_path / "tables")]) == 0
    table = (tmp_path / "tables" / "table2.md").read_text()
    assert table.count("### ") == 2 and "test MSE" in table
    assert ["Uniform", "ours", "0.450 ± 0.071 (n=2)"] in table_rows(table)
    assert "The paper's values for this setup are not published here." in table
    verdict = (tmp_path / "tables" / "verdict.md").read_text()
    assert verdict.count("### ") == 2
    assert "SenseMode and Uniform do not both have finished runs" in verdict


def test_setups_that_differ_only_in_learning_rate_are_kept_apart(sweep, tmp_path, capsys):
    """Two sweeps of the same grid at another learning rate: two tables, never merged cells,
    and the table says which key differs."""
    other = tmp_path / "lr0.05"
    for seed in range(4):
        fake_run(other, "uniform", 0.5, seed, 50.0 + seed, lr=0.05)
    assert main([str(sweep), str(other), "--out", str(tmp_path / "tables")]) == 0
    table = (tmp_path / "tables" / "table2.md").read_text()
    assert table.count("### cifar10, Stable resnet110") == 2
    assert "optimizer.lr: 0.1 -> 0.05" in table
    first, other = table.split("### ")[1:]
    assert table_row(first, "Uniform", "ours")[2] == "17.2 ± 0.3 (n=4)"  # its cells, alone
    assert "51.5 ± 1.3 (n=4)" in table_row(other, "Uniform", "ours")  # in a table of its own
    assert "optimizer.lr: 0.1 -> 0.05" in other
    summary = pd.read_csv(tmp_path / "tables" / "summary.csv")
    cells = summary[(summary["mode"] == "uniform") & (summary.budget == 0.5)]
    assert sorted(cells.n) == [4, 4] and cells.setup.nunique() == 2


def test_the_baseline_alone_gets_a_table(tmp_path):
    """Runs without stochastic depth only (no budget columns): the baseline under b=1."""
    for seed in (0, 1):
        fake_run(tmp_path, "none", 1.0, seed, 0.3 + seed / 10, dataset="toy", model="vanilla")
    assert main([str(tmp_path)]) == 0
    table = (tmp_path / "table2.md").read_text()
    assert table_rows(table) == [
        ["mode", "", "b=1"],
        ["No SD (b=1)", "ours", "0.350 ± 0.071 (n=2)"],
    ]
    assert (tmp_path / "table2_toy_vanilla_164ep.png").exists()


@pytest.mark.parametrize("content", ["", "{not json", '{"dataset": "cifar10", "status": "ok"}'])
def test_an_unreadable_results_file_is_named_and_counted_missing(sweep, tmp_path, content, capsys):
    broken = sweep / "budget=0.5,mode=uniform,seed=0" / "results.json"
    broken.write_text(content)
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert f"warning: {broken}: unreadable" in captured.err
    table = (tmp_path / "out" / "table2.md").read_text()
    uniform = table_row(table, "Uniform", "ours")
    assert uniform[2] == "17.2 ± 0.3 (n=4)"
    assert uniform[6].endswith("(n=3; 1 missing)")  # b = 0.5: planned in sweep.json, unreadable
    assert f"- {broken}: unreadable" in table


def test_crossings():
    budgets = [0.1, 0.2, 0.3, 0.4]
    assert crossings(budgets, [1, 2, 3, 4], [2, 2.5, 2.5, 3]) == [pytest.approx(0.25)]
    assert crossings(budgets, [1, 2, 3, 4], [2, 3, 4, 5]) == []
    assert crossings(budgets, [1, math.nan, 3, 4], [2, 2, 2, 2]) == [pytest.approx(0.2)]


def test_runs_csv_has_a_row_per_run(sweep, tmp_path):
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False, na_values=[""])
    assert list(runs.columns) == [*RUNS_COLUMNS, "command", "table_commit"]
    assert len(runs) == (9 + 9 + 5) * 4 + 4 + 4 and runs.identity.dropna().is_unique
    counts = runs.status.value_counts().to_dict()
    assert counts == {"ok": 94, "failed": 1, "missing": 1, "left out": 4}
    assert "budget=0.5,mode=uniform,seed=0" in (out / "runs.csv").read_text()
    assert ",uniform,,0.5,0,ok," in (out / "runs.csv").read_text()  # seeds as integers
    left = runs[runs.status == "left out"]  # Linear below (L - 1)/(2L): the paper's "-"
    assert set(left["mode"]) == {"linear"} and sorted(left.budget) == [0.1, 0.2, 0.3, 0.4]
    one = runs[(runs["mode"] == "uniform") & (runs.budget == 0.5) & (runs.seed == 0)].iloc[0]
    written = json.loads((sweep / "budget=0.5,mode=uniform,seed=0" / "results.json").read_text())
    assert (one.sweep, one.dir) == (str(sweep), "budget=0.5,mode=uniform,seed=0")
    assert one.test == written["test"] == pytest.approx(6.8 + OFFSETS[1])
    assert (one.test_loss, one.expected_depth) == (written["test_loss"], 0.5 * 54)
    assert (one.identity, one.setup, one.metric, one.report) == (
        written["identity"],
        written["setup"],
        "error",
        "final",
    )
    missing = runs[runs.status == "missing"].iloc[0]
    assert (missing["mode"], missing.budget, missing.seed) == ("sensemode", 0.2, 2)
    assert math.isnan(missing.test) and missing.dir == "budget=0.2,mode=sensemode,seed=2"


def without_stamp(path) -> str:
    """A file sdexp-table wrote, less what names the command and commit that wrote it."""
    if path.suffix == ".md":
        return path.read_text().split("\n", 1)[1]
    return (
        pd.read_csv(path)
        .drop(columns=["command", "commit", "table_commit"], errors="ignore")
        .to_csv(index=False)
    )


def test_the_tables_regenerate_from_runs_csv(sweep, tmp_path):
    """``sdexp-table runs.csv``: the committed runs.csv alone gives the same tables, verdicts and
    runs.csv as the sweep it was written from (the "-" cells included); L from expected_depth
    and the budget where an older runs.csv has no num_blocks."""
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert main([str(sweep), "--out", str(first), "--small", "0.2", "--large", "0.8"]) == 0
    assert (
        main([str(first / "runs.csv"), "--out", str(second), "--small", "0.2", "--large", "0.8"])
        == 0
    )
    names = ["table2.md", "verdict.md", "table2.csv", "summary.csv", "runs.csv", "verdict.csv"]
    for name in names:
        assert without_stamp(second / name) == without_stamp(first / name), name
    older = pd.read_csv(first / "runs.csv").drop(columns="num_blocks")
    third.mkdir()
    older.to_csv(third / "runs.csv", index=False)
    assert main([str(third / "runs.csv"), "--small", "0.2", "--large", "0.8"]) == 0
    assert without_stamp(third / "table2.md") == without_stamp(first / "table2.md")
    assert "(L = 54)" in (third / "table2.md").read_text()


def test_a_runs_csv_cannot_give_another_report(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main([str(tmp_path / "runs.csv"), "--report", "best", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        f"error: --report best: {tmp_path / 'runs.csv'} holds the final model's test metric, "
        "not the best one (that needs the runs' results.json)\n"
    )


def test_the_paired_verdict_is_written_and_printed(sweep, tmp_path, capsys):
    """Pre-registered regimes: b = 0.1 against b = 0.7 and 0.8, seed by seed. In the fixture
    SenseMode - Uniform of seed s is the paper's difference plus OFFSETS[s] - OFFSETS[s + 1]."""
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--small", "0.1", "--large", "0.7", "0.8"]) == 0
    printed = capsys.readouterr().out
    rows = pd.read_csv(out / "verdict.csv")
    paired = rows[rows.test == "paired"].set_index("regime")
    assert list(paired.budgets) == ["0.1", "0.7, 0.8"] and list(paired.n) == [4, 4]
    shift = np.subtract(OFFSETS, np.roll(OFFSETS, -1))  # -0.2, -0.2, -0.2, 0.6
    small = (15.4 - 17.2) + shift
    large = ((7.3 - 5.9) + (6.6 - 5.7)) / 2 + shift
    for regime, x, alternative in (("small", small, "less"), ("large", large, "greater")):
        row = paired.loc[regime]
        assert row.effect == pytest.approx(x.mean())
        test = stats.ttest_1samp(x, 0, alternative=alternative)
        assert row.p_t == pytest.approx(test.pvalue)
        ci = stats.ttest_1samp(x, 0).confidence_interval()
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high))
        assert row.p_perm == 1 / 16  # 4 seeds, all one way: the smallest possible
        assert row.conclusion == "inconclusive"  # t says yes, 16 sign flips cannot
    verdict = (out / "verdict.md").read_text()
    sentence = next(line for line in verdict.splitlines() if line.startswith("**Paired"))
    assert sentence in printed and "neither support nor contradict" in sentence
    assert printed.index(sentence) < printed.index("**Per budget (descriptive):**")
    png = out / "paired_cifar10_resnet110_164ep.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (
            ["--small", "0.25", "--large", "0.8"],
            "error: --small: no finished SenseMode and Uniform runs at b = 0.25 (both ran at "
            "0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)",
        ),
        (
            ["--small", "0.2"],
            "error: --small and --large: pre-register both regimes' budgets, or neither (the "
            "grid split at b = 0.5) (see sdexp-table --help)",
        ),
        (
            ["--small", "0.8", "--large", "0.2", "0.9"],
            "error: --small and --large: every small budget must lie below every large one, got "
            "--small 0.8 --large 0.2 0.9 (see sdexp-table --help)",
        ),
        (
            ["--small", "abc", "--large", "0.8"],
            "error: argument --small: a budget is a number in (0, 1], got 'abc' (see sdexp-table "
            "--help)",
        ),
        (
            ["--margin", "-0.3"],
            "error: argument --margin: the margin is a positive number, got '-0.3' (see "
            "sdexp-table --help)",
        ),
    ],
)
def test_bad_regime_options_are_one_line(sweep, tmp_path, capsys, options, line):
    out = tmp_path / "out"
    try:
        status = main([str(sweep), "--out", str(out), *options])
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    assert status == 2 and captured.err == line + "\n" and captured.out == ""
    assert not out.exists()


def test_two_budgets_give_no_crossover_estimate(tmp_path, capsys):
    """Issue 25: the table's note says between which two budgets the means change order, and
    gives no b ≈ from a line through two points; the plot marks no crossing."""
    for seed in range(3):
        for mode, budget, value in [("sensemode", 0.2, 1.5), ("uniform", 0.2, 2.4)] + [
            ("sensemode", 0.8, 1.3),
            ("uniform", 0.8, 1.2),
        ]:
            fake_run(tmp_path / "sweep", mode, budget, seed, value + 0.1 * seed, dataset="digits")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "table2.md").read_text()
    assert "SenseMode and Uniform cross: ours between b = 0.2 and 0.8." in table
    assert "≈" not in table
    (found,) = tables(collect([tmp_path / "sweep"]), summarize(collect([tmp_path / "sweep"]).frame))
    assert found.plot().cross == []
