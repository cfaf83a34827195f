"""The Budget Hypothesis verdict (Sec. 5) of each table's finished runs, and the files that hold
it (``verdict.md``, ``verdict.csv``, the paired plots).

Per table and SenseMode variant (``hypothesis_runs``): the paired regime test that decides
(``sdexp.analysis.paired``), with the test set's noise where every run compared has per-image
values (``sdexp.analysis.images``), and the descriptive per-budget view
(``sdexp.analysis.per_budget``); SenseMode's variants against each other
(``sdexp.analysis.variants``); with ``pool``, one more verdict over every table's runs, paired by
setup and seed (``pooled``). ``verdict.csv``'s ``test`` column says which test a row is of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sdexp.analysis.hypothesis import BOUNDARY, HYPOTHESIS, name
from sdexp.analysis.images import MCNEMAR_COLUMNS, ImageTests
from sdexp.analysis.paired import MARGIN, PAIRED_COLUMNS, Paired, paired
from sdexp.analysis.per_budget import COLUMNS as VERDICT_COLUMNS
from sdexp.analysis.per_budget import Switch, agreement, compare, pair, sentence, switches
from sdexp.analysis.plots import save_paired_plot
from sdexp.analysis.runs import Runs
from sdexp.analysis.tables import Table
from sdexp.analysis.variants import VARIANT_COLUMNS, variant_contrasts, variant_text

LABELS = ["setup", "table", "sensemode", "test"]
CSV_COLUMNS = LABELS + list(
    dict.fromkeys([*PAIRED_COLUMNS, *VERDICT_COLUMNS, *MCNEMAR_COLUMNS, *VARIANT_COLUMNS])
)
POOLED = "pooled"


@dataclass(frozen=True)
class Regimes:
    """The paired test's options: the pre-registered budgets of each regime (None: the grid
    split at 0.5) and the margin (None: ``MARGIN`` for an error in %, none for an MSE)."""

    small: list[float] | None = None
    large: list[float] | None = None
    margin: float | None = None

    def for_metric(self, metric: str) -> dict:
        """``verdict``'s keyword arguments for a table of ``metric``."""
        error = metric == "error"
        margin = self.margin if self.margin is not None else (MARGIN if error else None)
        return {"small": self.small, "large": self.large, "margin": margin, "unit": "pp" * error}


@dataclass(frozen=True)
class Verdict:
    """The Budget Hypothesis tested on one setup's runs."""

    comparisons: pd.DataFrame  # per_budget's COLUMNS, one row per budget and pair
    switches: list[Switch]  # SenseMode-Uniform
    outcome: str  # the per-budget view's agreement (per_budget.agreement)
    sentence: str
    paired: Paired  # the test the hypothesis states: SenseMode against Uniform by regime
    level: float = 0.95
    boundary: float = BOUNDARY

    @property
    def stance(self) -> str:
        """The test, the multiple-comparison stance and the agreement rule, in two sentences."""
        return (
            f"Welch's t-test over seeds per budget; diff = mean_a - mean_b (negative: mode_a "
            f"better), {self.level:.0%} Welch confidence interval (not adjusted); p_Holm: "
            f"Holm-adjusted within each pair's budgets; significant: p_Holm < {1 - self.level:g}. "
            f"Agrees: SenseMode significantly better at some b < {self.boundary:g} and Uniform "
            f"at some b >= {self.boundary:g}, never significantly the other way round."
        )

    def markdown(self) -> str:
        """The paired verdict, then the descriptive one per budget, for verdict.md."""
        shown, modes = self.comparisons.copy(), ["mode_a", "mode_b", "better"]
        shown[modes] = shown[modes].map(name)
        numbers = ["mean_a", "mean_b", "diff", "ci_low", "ci_high"]
        shown[numbers] = shown[numbers].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        p_values = ["p_value", "p_adjusted"]
        shown[p_values] = shown[p_values].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        shown["significant"] = shown["significant"].map({True: "yes", False: ""})
        shown["budget"] = shown["budget"].map(lambda v: f"{v:g}")
        lines = [self.paired.markdown(), f"**Per budget (descriptive):** {self.sentence}", ""]
        if len(shown):
            lines += [self.stance, "", shown.to_markdown(index=False, disable_numparse=True)]
        return "\n".join(lines) + "\n"


def verdict(
    runs: pd.DataFrame, level: float = 0.95, boundary: float = BOUNDARY, **regimes
) -> Verdict:
    """The verdict for one setup's finished runs (``regimes``: ``paired.paired``'s keywords)."""
    if not 0 < level < 1:
        raise ValueError(f"the confidence level must lie in (0, 1), got {level}")
    tested = paired(runs, level, boundary, **regimes)
    comparisons = compare(runs, level)
    rows = pair(comparisons)
    found = switches(rows)
    outcome = agreement(rows, boundary) if len(rows) else "cannot be tested"
    text = sentence(rows, found, outcome, 1 - level)
    return Verdict(comparisons, found, outcome, text, tested, level, boundary)


def hypothesis_runs(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The runs of one verdict per SenseMode variant, each against the other modes' plain runs."""
    sense = runs["mode"] == "sensemode"
    labels = sorted(runs.loc[sense, "variant"].unique()) or [""]
    return [
        (label, runs[(~sense & (runs["variant"] == "")) | (sense & (runs["variant"] == label))])
        for label in labels
    ]


def image_tests(runs: Runs, chosen: pd.DataFrame, metric: str) -> ImageTests | None:
    """The per-image values of ``chosen``'s compared runs, or None unless every one has some."""
    compared = chosen[chosen["mode"].isin(HYPOTHESIS)]
    if compared.empty or not compared["identity"].isin(runs.images.keys()).all():
        return None
    values = {
        (r.mode, round(float(r.budget), 10), r.seed): (r.setup, runs.images[r.identity])
        for r in compared.itertuples()
    }
    return ImageTests(values, metric)


def check_pool(tables: list[Table]) -> None:
    """ValueError naming the tables unless ``--pool`` may pair across them."""
    shared = {(t.dataset, t.model, t.epochs, t.recipe, t.metric, t.report) for t in tables}
    if len(shared) > 1:
        raise ValueError(
            "--pool: the tables differ in dataset, model, epochs, recipe, metric or report: "
            + "; ".join(t.title for t in tables)
        )


def pooled(ok: pd.DataFrame, tables: list[Table]) -> tuple[str, pd.DataFrame]:
    """The title, and the finished runs of every table as one, each seed labelled by its setup
    ('e444de/20'); ValueError unless ``check_pool`` passes."""
    check_pool(tables)
    runs = ok[ok["setup"].isin([t.setup for t in tables])]
    seeds = [f"{s[:6]}/{seed}" for s, seed in zip(runs.setup, runs.seed, strict=True)]
    runs = runs.assign(seed=seeds)
    setups = ", ".join(t.setup[:6] for t in tables)
    title = f"{tables[0].title}, pooled over setups {setups} (pairs: setup/seed)"
    return title, runs


def write_verdicts(
    runs: Runs,
    found: list[Table],
    out: Path,
    made,
    options: Regimes | None = None,
    pool: bool = False,
) -> tuple[list[tuple[str, Verdict]], list[Path]]:
    """verdict.md, verdict.csv and the paired plots, per table and SenseMode variant, and pooled."""
    frame, options = runs.frame, options or Regimes()
    ok = frame[(frame.status == "ok") & frame["value"].notna()]
    parts = [(t.title, t.setup, t, ok[ok.setup == t.setup]) for t in found]
    if pool and found:
        title, together = pooled(ok, found)
        parts.append((title, POOLED, found[0], together))
    verdicts, frames, plots, texts = [], [], [], []
    for title, setup, table, chosen_runs in parts:
        for label, chosen in hypothesis_runs(chosen_runs):
            images = image_tests(runs, chosen, table.metric)
            result = verdict(chosen, **options.for_metric(table.metric), images=images)
            named = title + (f" (SenseMode {label})" if label else "")
            verdicts.append((named, result))
            texts.append(f"### {named}\n\n{result.markdown()}")
            # verdict.csv: the paired contrasts (where any seed has both modes), McNemar, Welch
            tests = {"mcnemar": result.paired.mcnemar, "welch": result.comparisons}
            if result.paired.differences["d"].notna().any():
                tests = {"paired": result.paired.contrasts, **tests}
                name = paired_plot_name(table, label, setup == POOLED)
                shown = named.replace("mean ± std over seeds", "SenseMode - Uniform by seed")
                plots.append(save_paired_plot(result.paired, shown, out / name, made.line))
            labels = {"setup": setup, "table": named, "sensemode": label}
            frames += [f.assign(**labels, test=test) for test, f in tests.items() if len(f)]
        sense = chosen_runs[chosen_runs["mode"] == "sensemode"]
        if sense["variant"].nunique() > 1:
            contrasts = variant_contrasts(sense)
            text = variant_text(contrasts, 0.95, options.for_metric(table.metric)["unit"])
            texts.append(f"### {title}: SenseMode's variants\n\n{text}\n")
            frames.append(contrasts.assign(setup=setup, table=title, sensemode="", test="variants"))
    (out / "verdict.md").write_text(f"{made.line}\n\n" + "\n".join(texts))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CSV_COLUMNS)
    counts = {"n": "Int64", "n_a": "Int64", "n_b": "Int64"}  # whole numbers beside blanks
    table = table.reindex(columns=CSV_COLUMNS).astype(counts)
    made.stamp(table).to_csv(out / "verdict.csv", index=False)
    return verdicts, plots


def paired_plot_name(table: Table, label: str, pooled_runs: bool) -> str:
    """'paired_digits_resnet56_50ep.png', with the variant's label, or 'pooled' in it."""
    suffix = "_" + re.sub(r"\W+", "_", label).strip("_") if label else ""
    if pooled_runs:
        return f"paired_{table.dataset}_{table.model}_{table.epochs}ep_pooled{suffix}.png"
    return table.plot_name.replace("table2_", "paired_", 1).replace(".png", f"{suffix}.png")
