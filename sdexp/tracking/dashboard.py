"""``sdexp-dashboard``: the W&B Report of one sweep group (``--dry-run``: its specification,
without a server), or the files ``sdexp-table`` wrote into DIR as one W&B run of the group (W&B
belongs here: ``sdexp-table`` only writes files).

    sdexp-dashboard --entity E --project P --group table2_cifar10 [--metric mse] [--dry-run S.json]
    sdexp-dashboard --project P --group table2_cifar10 --tables outputs/tables
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from sdexp.tracking.report import METRIC_NAMES, build_report, specification
from sdexp.tracking.wandb_access import (
    has_wandb_credentials,
    server_problem,
    wandb_server,
    with_fallback,
)

#: What ``sdexp-table`` writes and ``--tables`` logs: CSV tables (W&B tables) and PNG plots.
TABLES = {"table2/summary": "summary.csv", "table2/tables": "table2.csv", "table2/cost": "cost.csv"}
PLOTS = ("table2_*.png", "paired_*.png")


def log_tables(folder: Path, project: str, group: str, entity: str | None = None) -> None:
    """``sdexp-table``'s files in ``folder`` (tables, plots, verdicts) as one W&B run of
    ``group``; offline, or nothing and a warning, as a training run's W&B (``with_fallback``)."""
    import pandas as pd
    import wandb

    run_of = dict(entity=entity, project=project, group=group, job_type="aggregate", name="table2")

    def start(mode: str):
        return wandb.init(
            **run_of, mode=mode, dir=str(folder), settings=wandb.Settings(silent=True)
        )

    run = with_fallback(start)
    if run is None:
        return
    csv = {key: pd.read_csv(folder / name) for key, name in TABLES.items()}
    plots = sorted(p for pattern in PLOTS for p in folder.glob(pattern))
    run.log(
        {
            **{key: wandb.Table(dataframe=frame) for key, frame in csv.items()},
            **{f"table2/plot_{p.stem}": wandb.Image(str(p)) for p in plots},
            "verdict/comparisons": wandb.Table(dataframe=pd.read_csv(folder / "verdict.csv")),
        }
    )
    run.summary["verdict/markdown"] = (folder / "verdict.md").read_text()
    where = Path(run.dir).parent
    run.finish()
    shown = f"offline to {where} (upload: wandb sync {shlex.quote(str(where))})"
    print(f"W&B: logged the tables, plots and verdicts {shown if run.offline else run.url}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sdexp-dashboard",
        description="Build the W&B Report of one sweep group (Table 2 and the curves behind it), "
        "or log sdexp-table's files to the group.",
    )
    parser.add_argument("--entity", help="W&B entity (user or team); the report needs it")
    parser.add_argument("--project", required=True, help="W&B project, e.g. sdexp")
    parser.add_argument("--group", required=True, help="the sweep's W&B group (run.group)")
    parser.add_argument(
        "--metric",
        choices=sorted(METRIC_NAMES),
        default="error",
        help="the task's metric: error (CIFAR, default) or mse (toy)",
    )
    parser.add_argument("--title", help="report title (default: 'Stochastic depth: sweep GROUP')")
    parser.add_argument(
        "--dry-run",
        metavar="SPEC.json",
        type=Path,
        help="write the report's specification to SPEC.json instead of saving the report",
    )
    parser.add_argument(
        "--tables",
        metavar="DIR",
        type=Path,
        help="log the files sdexp-table wrote into DIR to W&B, as a run of the group",
    )
    args = parser.parse_args(argv)
    if args.entity is None and args.tables is None:
        parser.error("--entity: the report needs the W&B entity (or give --tables DIR alone)")
    if args.tables is not None and not (args.tables / TABLES["table2/summary"]).is_file():
        parser.error(f"--tables: {args.tables} holds no sdexp-table output (summary.csv)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 the report could not be saved."""
    args = parse_args(argv)
    if args.tables is not None:
        log_tables(args.tables, args.project, args.group, args.entity)
        if args.entity is None:
            return 0
    report = build_report(args.entity, args.project, args.group, args.metric, args.title)
    if args.dry_run:
        spec = specification(report)
        args.dry_run.write_text(json.dumps(spec, indent=2) + "\n")
        print(f"wrote the specification of {len(spec['panels'])} panels to {args.dry_run}")
        return 0
    if not has_wandb_credentials():
        print("sdexp-dashboard: no W&B credentials: run `wandb login` first", file=sys.stderr)
        return 2
    if problem := server_problem():  # else wandb retries for a minute or more before it gives up
        host, port = wandb_server()
        reason = f"the W&B server {host}:{port} is unreachable ({problem})"
        print(f"sdexp-dashboard: could not save the report: {reason}", file=sys.stderr)
        return 2
    try:
        report.save()
    except Exception as error:  # no server, bad key, unknown entity or project: one line
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        print(f"sdexp-dashboard: could not save the report: {reason}", file=sys.stderr)
        return 2
    print(f"saved the report: {report.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
