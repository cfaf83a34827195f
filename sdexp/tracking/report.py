"""The W&B Report of one sweep group, Table 2 of Hayou & Ayed (2021) and the curves behind it,
built with wandb-workspaces; ``sdexp-dashboard`` saves it.

One panel grid per question, each with its own run set (a run set's grouping applies to its runs
table and every panel of its grid); all but the failed runs' keep the runs whose summary says
``status: ok``. ``specification`` reads back what each panel and run set reads.
"""

from __future__ import annotations

import wandb_workspaces.reports.v2 as wr
from wandb_workspaces import expr
from wandb_workspaces.reports.v2.interface import Panel

# ---- The logged names the report reads: adjust them here only. -----------------------------
# wandb.config, what the runs are grouped by (``sdexp.results.RunKey``). wandb-workspaces sends
# "key.mode" as "key.value.mode": ``key`` is a nested dict of the config.
CONFIG = {"mode": "key.mode", "budget": "key.budget"}
# run.summary (RunResult.summary), one value per run: run set filters and columns. ``status``:
# "ok" or "failed"; ``reason``: why a run failed; ``test``: the reported test metric ("report").
SUMMARY = {k: k for k in ("status", "reason", "mode", "budget", "seed", "test", "test_final")}
SUMMARY |= {k: k for k in ("test_best", "expected_depth", "epoch_time_s")}
HISTORY = {  # run.log rows: line plots need them there; "{metric}" is "error" or "mse"
    # one row per run at its end, so that the budget can be an x-axis (RunResult.history_row)
    "budget": "budget",
    "test": "test",
    "expected_depth": "expected_depth",
    "epoch_time_s": "epoch_time_s",
    # training curves (Lightning's WandbLogger)
    "step": "trainer/global_step",
    "epoch": "epoch",
    "train_loss": "train/loss",
    "val": "val/{metric}",
}
PROFILES = {  # wandb.plot.line tables: summary key of the table, its x and y columns
    "survival": ("layers/survival_table", "layer", "survival"),
    "sensitivity": ("layers/sensitivity_table", "layer", "sensitivity"),
}
STATUS_OK, STATUS_FAILED, BASELINE_MODE = "ok", "failed", "none"
# ------------------------------------------------------------------------------------------

METRIC_NAMES = {"error": "error (%)", "mse": "MSE"}
MEAN_STD = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stddev"}  # over seeds


def runs(entity: str, project: str, group: str, name: str, *filters, **kwargs) -> wr.Runset:
    """The runs of the W&B group ``group`` that pass ``filters``."""
    where = expr.And(expr.Metric("Group") == group, *filters)
    return wr.Runset(entity=entity, project=project, name=name, filters=where, **kwargs)


def failed(entity: str, project: str, group: str) -> wr.Runset:
    """The sweep's failed runs: ``status: failed``, or failed or crashed for W&B (killed)."""
    bad = expr.Or(
        expr.Summary(SUMMARY["status"]) == STATUS_FAILED,
        expr.Metric("State").isin(["failed", "crashed"]),
    )
    columns = [f"summary:{SUMMARY[k]}" for k in ("mode", "budget", "seed", "reason")]
    return runs(entity, project, group, "failed runs", bad, pinned_columns=columns)


def by_cell() -> list[str]:
    """Run set grouping by Table 2's cell: mode and budget (the seeds of a cell aggregate)."""
    return [f"config.{CONFIG['mode']}", f"config.{CONFIG['budget']}"]


def against_budget(key: str, title: str) -> wr.LinePlot:
    """``key`` against the budget, one line per mode, mean with a ±1 std band over seeds: a line
    plot is the one panel that aggregates runs per x value, but its x-axis must be a history key
    (each run logs one row holding ``budget`` and its results at its end)."""
    return wr.LinePlot(
        title=title,
        x=HISTORY["budget"],
        y=[HISTORY[key]],
        groupby=wr.Config(CONFIG["mode"]),
        title_x="budget (mean survival probability)",
        **MEAN_STD,
    )


def baseline(metric: str) -> wr.ScalarChart:
    """The no-SD baseline's test metric, mean (± std) over its seeds: on the line plot its runs
    share one budget, where a band has no width."""
    return wr.ScalarChart(
        title=f"no-SD baseline: test {METRIC_NAMES[metric]}", metric=HISTORY["test"], **MEAN_STD
    )


def table2_bars(metric: str) -> wr.BarPlot:
    """Table 2's cells as bars (one per group of the run set), mean with error bars over seeds."""
    return wr.BarPlot(
        title=f"Table 2: test {METRIC_NAMES[metric]} by mode and budget",
        metrics=[HISTORY["test"]],
        orientation="v",
        layout=wr.Layout(w=24, h=8),
        **MEAN_STD,
    )


def profile(name: str) -> wr.CustomChart:
    """A per-layer profile, one line per run: a custom chart over the table ``wandb.plot.line``
    logged, as wandb writes it (line plots only read history). The query's run fields are ``{}``:
    ``CustomChart`` would send ``[]``, a value where wandb sends an empty field list."""
    table, x, y = PROFILES[name]
    return wr.CustomChart(
        query={"summaryTable": {"tableKey": table}, "id": {}, "name": {}, "_defaultColorIndex": {}},
        chart_name="wandb/line/v0",
        chart_fields={"x": x, "y": y, "stroke": None},
        chart_strings={"title": f"{name} per layer"},
        layout=wr.Layout(w=12, h=8),
    )


def curve(key: str, x: str, metric: str, title: str) -> wr.LinePlot:
    """A training curve; the run set groups it by mode and budget, mean and std over seeds."""
    y = HISTORY[key].format(metric=metric)
    return wr.LinePlot(title=title, x=HISTORY[x], y=[y], layout=wr.Layout(w=12, h=8), **MEAN_STD)


def build_report(
    entity: str, project: str, group: str, metric: str = "error", title: str | None = None
) -> wr.Report:
    """The report for the W&B group ``group`` of ``entity/project``; ``metric``: error or mse."""
    name = METRIC_NAMES[metric]

    def grid(runset: wr.Runset, *panels: Panel, table: bool = False) -> wr.PanelGrid:
        # panels over one run set; its runs table is shown only where it is the point
        return wr.PanelGrid(runsets=[runset], panels=list(panels), hide_run_sets=not table)

    def ok(name: str, *also: expr.FilterExpr, **kwargs) -> wr.Runset:
        # status: ok in the summary: no failed, crashed or running run
        is_ok = expr.Summary(SUMMARY["status"]) == STATUS_OK
        return runs(entity, project, group, name, is_ok, *also, **kwargs)

    table_columns = ["mode", "budget", "test", "test_best", "test_final", "expected_depth"]
    blocks = [
        wr.P(
            f"Runs of the W&B group {group} whose summary says status: {STATUS_OK}; failed runs "
            "appear only in the last section. Bands and error bars: ±1 std over seeds."
        ),
        wr.H2(f"Test {name}, expected depth and time per epoch against the budget"),
        grid(
            ok("finished runs"),
            against_budget("test", f"test {name} against budget"),
            against_budget("expected_depth", "expected depth against budget"),
            against_budget("epoch_time_s", "median time per epoch (s) against budget"),
        ),
        grid(
            ok("no-SD baseline", expr.Summary(SUMMARY["mode"]) == BASELINE_MODE),
            baseline(metric),
        ),
        wr.H2("Table 2: runs grouped by mode and budget"),
        grid(
            ok(
                "Table 2 cells (mode, budget)",
                groupby=by_cell(),
                pinned_columns=[f"summary:{SUMMARY[k]}" for k in table_columns],
            ),
            table2_bars(metric),
            table=True,
        ),
        wr.H2("Survival probability and sensitivity per layer"),
        grid(ok("finished runs, one line each"), profile("survival"), profile("sensitivity")),
        wr.H2("Training curves by mode and budget"),
        grid(
            ok("finished runs by mode and budget", groupby=by_cell()),
            curve("train_loss", "step", metric, "training loss"),
            curve("val", "epoch", metric, f"validation {name}"),
        ),
        wr.H2("Failed runs"),
        wr.P("The runs that failed or crashed, with the reason each gave; none is in a panel."),
        grid(
            failed(entity, project, group), wr.RunComparer(layout=wr.Layout(w=24, h=8)), table=True
        ),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title=title or f"Stochastic depth: sweep {group}",
        description=f"Hayou & Ayed (2021), Table 2 and the curves behind it, for group {group}",
        blocks=blocks,
        width="fluid",
    )


def panel_key(metric: str | wr.Config | wr.SummaryMetric | wr.Metric) -> str:
    """``section:name`` of a panel's metric: a plain name is a history key or a run attribute."""
    if isinstance(metric, wr.Config):
        return f"config:{metric.name}"
    if isinstance(metric, wr.SummaryMetric):
        return f"summary:{metric.name}"
    name = metric.name if isinstance(metric, wr.Metric) else metric
    return f"run:{name}" if name in expr.FE_METRIC_NAME_MAP else f"history:{name}"


def grouping_key(key: str | wr.Config | wr.Metric) -> str:
    """A panel's ``groupby``: a plain name is a config key unless it names a run attribute."""
    if isinstance(key, str) and key not in expr.FE_METRIC_NAME_MAP:
        return f"config:{key}"
    return panel_key(key)


def runset_key(key: str, separator: str) -> str:
    """A run set's grouping or column as ``section:name`` (a config key without ``.value``)."""
    section, name = key.split(separator, 1) if separator in key else ("run", key)
    if section == "config":
        name = ".".join(part for part in name.split(".") if part != "value")
    return f"{section}:{name}"


def filter_keys(filters: expr.Filters) -> list[str]:
    """The ``section:name`` of every leaf of a run set's filter tree."""
    if filters.key is not None:
        return [f"{filters.key.section}:{filters.key.name}"]
    return [key for child in filters.filters or [] for key in filter_keys(child)]


def panel_spec(panel: Panel) -> dict:
    """A panel's type, title, the keys it reads and how it groups runs."""
    grouping = {}
    if isinstance(panel, wr.LinePlot):
        title, keys = panel.title, [panel_key(panel.x), *map(panel_key, panel.y)]
    elif isinstance(panel, wr.BarPlot):
        title, keys = panel.title, [panel_key(m) for m in panel.metrics]
    elif isinstance(panel, wr.ScalarChart):
        title, keys = panel.title, [panel_key(panel.metric)]
    elif isinstance(panel, wr.CustomChart):
        table = panel.query["summaryTable"]["tableKey"]
        columns = [c for c in panel.chart_fields.values() if c is not None]
        title = panel.chart_strings.get("title")
        keys = [f"summary:{table}", *(f"table:{table}#{c}" for c in columns)]
    else:  # RunComparer, MarkdownPanel: they read no key of ours
        title, keys = None, []
    if isinstance(panel, (wr.LinePlot, wr.BarPlot, wr.ScalarChart)):
        by = getattr(panel, "groupby", None)
        grouping = {
            "by": None if by is None else grouping_key(by),
            "agg": panel.groupby_aggfunc,
            "range": panel.groupby_rangefunc,
        }
    return {"type": type(panel).__name__, "title": title, "keys": keys, "grouping": grouping}


def runset_spec(runset: wr.Runset) -> dict:
    """A run set's filters (as W&B's filter expression), grouping and table columns."""
    return {
        "name": runset.name,
        "filters": runset.filters,
        "filter_keys": filter_keys(expr.expr_to_filters(runset.filters)),
        "groupby": [runset_key(g, ".") for g in runset.groupby],
        "columns": [runset_key(c, ":") for c in runset.pinned_columns],
    }


def specification(report: wr.Report) -> dict:
    """What ``report.save()`` would save, read back from the report's run sets and panels."""
    spec = {"title": report.title, "entity": report.entity, "project": report.project}
    spec |= {"runsets": [], "panels": []}
    heading = None
    for block in report.blocks:
        if isinstance(block, wr.H2):
            heading = block.text
        if not isinstance(block, wr.PanelGrid):
            continue
        shown = {"section": heading, "runs_table": not block.hide_run_sets}
        runsets = [runset_spec(runset) | shown for runset in block.runsets]
        spec["runsets"] += runsets
        for panel in block.panels:
            where = {"section": heading, "runset": runsets[block.active_runset or 0]["name"]}
            spec["panels"].append(where | panel_spec(panel))
    return spec


def runset_reads(spec: dict) -> dict[str, set[str]]:
    """The keys each run set of ``spec`` reads, its own and those of the panels that show it."""
    reads = {r["name"]: {*r["filter_keys"], *r["groupby"], *r["columns"]} for r in spec["runsets"]}
    for panel in spec["panels"]:
        by = panel["grouping"].get("by")
        reads[panel["runset"]] |= {*panel["keys"], *([by] if by else [])}
    return reads
