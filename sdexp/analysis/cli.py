"""Table 2 from sweeps: ``sdexp-table SOURCE...`` (or ``python -m sdexp.analysis.cli SOURCE...``).

A SOURCE is a sweep directory (every run under it, ``sdexp.analysis.runs``) or a ``runs.csv`` that
sdexp-table wrote, read back so that the committed tables and verdicts regenerate from it. Per
setup it writes ``table2.md``/``.csv``, ``summary.csv``, ``runs.csv``, the table's plot
(``sdexp.analysis.tables``, ``plots``), ``verdict.md``/``.csv`` and the paired plots (the Budget
Hypothesis, ``sdexp.analysis.verdict``), ``cost.md``/``.csv`` (``sdexp.analysis.cost``), and prints
the markdown. Every file names the command and the code that made it (``MadeBy``); a cell of a
table whose runs came from different code stops the command unless ``--mix-code``. It writes
files and nothing else (docs/table.md: every file and option).
"""

from __future__ import annotations

import argparse
import functools
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pandas as pd

from sdexp.analysis import cost
from sdexp.analysis.paired import MARGIN
from sdexp.analysis.plots import save_plot
from sdexp.analysis.runs import Runs, collect, runs_csv
from sdexp.analysis.tables import REPORTS, Table, budget_key, summarize, tables
from sdexp.analysis.verdict import Regimes, check_pool, write_verdicts
from sdexp.provenance import current_code
from sdexp.results import PLAN_FILE, RESULTS_FILE


@dataclass(frozen=True)
class MadeBy:
    """What made the files ``sdexp-table`` writes: the command line and the code's commit."""

    command: str
    commit: str

    @property
    def line(self) -> str:
        """The first line of a markdown file."""
        return f"Made by `{self.command}` with sdexp {self.commit}."

    def stamp(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with the columns ``command`` and ``table_commit``, for a CSV file."""
        return frame.assign(command=self.command, table_commit=self.commit)


def write(runs: Runs, out: Path, made: MadeBy) -> tuple[list[Table], list[Path]]:
    """Write table2.md, table2.csv, summary.csv and one plot per setup into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs.frame)
    found = tables(runs, summary)
    text = "\n".join(t.markdown() for t in found)
    if runs.unreadable:
        listed = "".join(f"- {line}\n" for line in runs.unreadable)
        text += f"\nUnreadable files (counted as missing):\n{listed}"
    (out / "table2.md").write_text(f"{made.line}\n\n{text}")
    wide = pd.concat([t.grid().assign(table=t.title) for t in found], ignore_index=True)
    made.stamp(wide).to_csv(out / "table2.csv", index=False)
    made.stamp(summary).to_csv(out / "summary.csv", index=False)
    plots = [save_plot(t.plot(), out / t.plot_name, made.line) for t in found]
    return found, plots


def write_cost(runs: Runs, found: list[Table], out: Path, made: MadeBy) -> str:
    """Write ``cost.md`` and ``cost.csv`` (``sdexp.analysis.cost``); returns the markdown."""
    titles = {
        t.setup: f"{t.dataset}, {t.model}, {t.epochs} epoch{'' if t.epochs == 1 else 's'}, "
        f"recipe {t.recipe}" + (f" (setup {t.setup[:6]})" if t.suffix else "")
        for t in found
    }
    spent = cost.cost(runs.frame, titles)
    made.stamp(spent).to_csv(out / "cost.csv", index=False)
    text = cost.markdown(spent)
    (out / "cost.md").write_text(f"{made.line}\n\n{text}")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option said in one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def number(text: str, top: float, what: str) -> float:
    """A number in (0, ``top``], else argparse's error naming ``what`` it must be."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= top or value == math.inf:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def arguments() -> argparse.ArgumentParser:
    parser = Parser(prog="sdexp-table", description=__doc__.splitlines()[0])
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="a sweep directory (every results.json and sweep.json below it), or a runs.csv "
        "that sdexp-table wrote (its rows: the tables and verdicts regenerate from it)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write (default: the one SOURCE, or its folder, or outputs/tables with "
        "several)",
    )
    parser.add_argument(
        "--report",
        choices=sorted(REPORTS),
        help="the test metric to show: of the best-validation checkpoint or of the final model "
        "(default: what each run's recipe reports)",
    )
    budget = functools.partial(number, top=1, what="a budget is a number in (0, 1]")
    regime = {"nargs": "+", "type": budget, "metavar": "B"}
    parser.add_argument(
        "--small",
        **regime,
        help="the paired test's small-budget regime, pre-registered (with --large; default: "
        "the grid's budgets below 0.5)",
    )
    parser.add_argument(
        "--large",
        **regime,
        help="the paired test's large-budget regime (default: the grid's budgets from 0.5)",
    )
    parser.add_argument(
        "--mix-code",
        action="store_true",
        help="put runs that different code made (another commit, other uncommitted changes: "
        "runs.csv's run_commit) into one cell of a table; without it such a cell stops the command",
    )
    parser.add_argument(
        "--margin",
        type=functools.partial(number, top=math.inf, what="the margin is a positive number"),
        help=f"the smallest effect of interest, in the metric's units: an effect must be beyond "
        f"it to count as predicted, and within it is negligible or equivalent (default: "
        f"{MARGIN:g} percentage points for a test error; none for an MSE)",
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help="also one verdict over the runs of every table together, paired by setup and seed "
        "(e.g. one preset on two data splits; the tables must share dataset, model, epochs, "
        "recipe and metric)",
    )
    return parser


def regime_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Regimes:
    """--small, --large and --margin, checked: both regimes or neither, small below large."""
    if (args.small is None) != (args.large is None):
        parser.error(
            "--small and --large: pre-register both regimes' budgets, or neither "
            "(the grid split at b = 0.5)"
        )
    if args.small is not None and max(args.small) >= min(args.large):
        parser.error(
            f"--small and --large: every small budget must lie below every large one, got "
            f"--small {' '.join(f'{b:g}' for b in args.small)} "
            f"--large {' '.join(f'{b:g}' for b in args.large)}"
        )
    return Regimes(args.small, args.large, args.margin)


def unpaired(runs: Runs, options: Regimes) -> str:
    """An error line if a pre-registered budget has no SenseMode and Uniform runs in any setup."""
    frame = runs.frame[runs.frame.status == "ok"]  # SenseMode in any variant
    both = frame.groupby(["setup", budget_key(frame["budget"])])["mode"].agg(set)
    grid = sorted({b for (_, b), modes in both.items() if {"sensemode", "uniform"} <= modes})
    ran = ", ".join(f"{b:g}" for b in grid) or "no budget"
    for option, budgets in (("--small", options.small), ("--large", options.large)):
        for b in budgets or []:
            if round(b, 6) not in grid:
                return (
                    f"error: {option}: no finished SenseMode and Uniform runs at b = {b:g} "
                    f"(both ran at {ran})"
                )
    return ""


def mixed_code(runs: Runs) -> str:
    """An error line if a cell of a table holds finished runs that different code made."""
    ok = runs.frame[runs.frame.status == "ok"]
    cells = ok.groupby(["setup", "mode", "variant", budget_key(ok["budget"])])["code"]
    mixed = [(cell, codes) for cell, codes in cells if codes.nunique() > 1]
    if not mixed:
        return ""
    (setup, mode, variant, budget), codes = mixed[0]
    counts = ", ".join(f"{n} by {label}" for label, n in codes.value_counts().items())
    named = f"{mode}{f' ({variant})' if variant else ''} at b = {budget:g} (setup {setup[:6]})"
    more = f" (and {len(mixed) - 1} more cells)" if len(mixed) > 1 else ""
    every = ", ".join(f"{n} by {label}" for label, n in ok["code"].value_counts().items())
    return (
        f"error: --mix-code: a cell of a table holds runs of different code: {named}: {counts}"
        f"{more}; of all finished runs {every}. Run the older ones again (the sweep's command "
        "with rerun_other_code=true), or pass --mix-code to put them together"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = arguments()
    args = parser.parse_args(argv)
    options = regime_options(parser, args)
    for source in args.sources:
        if not (source.is_dir() or (source.is_file() and source.suffix == ".csv")):
            parser.error(f"{source} is neither a directory nor a runs.csv file")
    try:
        runs = collect(args.sources, args.report)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in runs.unreadable:  # not in the table; a run a sweep planned counts as missing
        print(f"warning: {line}; left out", file=sys.stderr)
    if runs.frame.empty:
        where = ", ".join(map(str, args.sources))
        print(f"error: no {RESULTS_FILE} or {PLAN_FILE} under {where}", file=sys.stderr)
        return 2
    for error in (unpaired(runs, options), "" if args.mix_code else mixed_code(runs)):
        if error:
            print(error, file=sys.stderr)
            return 2
    if args.pool:
        try:
            check_pool(tables(runs, summarize(runs.frame)))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    out = args.out or (Path("outputs/tables") if len(args.sources) > 1 else args.sources[0])
    out = out.parent if out.is_file() else out
    made = MadeBy(shlex.join(["sdexp-table", *argv]), current_code().label)
    try:
        found, plots = write(runs, out, made)
        verdicts, paired_plots = write_verdicts(runs, found, out, made, options, args.pool)
        made.stamp(runs_csv(runs)).to_csv(out / "runs.csv", index=False)
        spent = write_cost(runs, found, out, made)
    except OSError as error:  # a place that cannot be written: its first write fails
        why = error.strerror or str(error)
        print(f"error: --out: cannot write {error.filename or out} ({why})", file=sys.stderr)
        return 2
    for table in found:
        print(table.markdown())
    print((out / "verdict.md").read_text().split("\n", 1)[1])
    print(spent)
    left_out = f"; left out {len(runs.unreadable)} unreadable file(s), named above"
    print(
        f"Wrote {out / 'table2.md'}, table2.csv, summary.csv, runs.csv, verdict.md, verdict.csv, "
        f"cost.md, cost.csv, {len(plots)} table plot(s) and {len(paired_plots)} paired plot(s) "
        f"to {out}{left_out if runs.unreadable else ''}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
