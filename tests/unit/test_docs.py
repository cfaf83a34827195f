"""What README and the manual (docs/) promise, held to the code: the configuration page is what
``scripts/config_reference.py`` writes from conf/, README's report outline is the report
``sdexp-dashboard`` builds, the library example runs, the results' tables are their committed
files, README names no commit and no page carries instructions for one particular machine.
(The site's build and its plots: tests/e2e/test_docs.py; the pages' commands:
tests/unit/test_readme.py.)"""

from __future__ import annotations

import re
import shutil

import pytest

from sdexp.tracking.report import build_report, specification
from tests.helpers import DOC_PAGES, ROOT, load_script, table_rows


@pytest.fixture(scope="module")
def reference():
    return load_script("config_reference")


def test_the_configuration_page_is_what_conf_writes(reference):
    """docs/configuration.md is never edited by hand: after a change to conf/, run
    ``python scripts/config_reference.py > docs/configuration.md``."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference.render(), (
        "docs/configuration.md is stale: run python scripts/config_reference.py > "
        "docs/configuration.md"
    )
    assert reference.main(["--check"]) == 0


def test_an_edit_of_conf_changes_the_page(reference, tmp_path, monkeypatch):
    """The page follows conf/: an edited comment or value shows, and a group the script does not
    describe stops it with one line naming the folder."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    monkeypatch.setattr(reference, "ROOT", tmp_path)
    monkeypatch.setattr(reference, "CONF", tmp_path / "conf")
    uniform = tmp_path / "conf" / "mode" / "uniform.yaml"
    uniform.write_text(uniform.read_text() + "extra: 1  # a key for the test\n")
    page = reference.render()
    assert "extra: 1  # a key for the test" in page
    assert page != (ROOT / "docs" / "configuration.md").read_text()
    (tmp_path / "conf" / "optimizer").mkdir()
    (tmp_path / "conf" / "optimizer" / "adam.yaml").write_text("_target_: torch.optim.Adam\n")
    with pytest.raises(SystemExit, match="conf/optimizer: a config group"):
        reference.render()


def test_every_group_and_option_of_conf_is_on_the_page(reference):
    page = (ROOT / "docs" / "configuration.md").read_text()
    for path in (ROOT / "conf").rglob("*.yaml"):
        group = path.parent.relative_to(ROOT / "conf").as_posix()
        title = f"## Top level: `{path.name}`" if group == "." else f"### `{group}={path.stem}`"
        assert title in page, path


def test_a_comment_reads_as_written(reference):
    """Markdown's syntax in a config's comment is escaped: no link, emphasis or HTML."""
    text = "[a|b] p_l * 2 <dir> `code`"
    assert reference.literal(text) == r"\[a|b\] p\_l \* 2 &lt;dir> \`code\`"


OUTLINE_START = "Stochastic depth: sweep table2_cifar10\n"


def test_the_report_outline_shown_is_the_report_built(tmp_path):
    """README shows the outline of the report where a screenshot would go: it is what
    ``scripts/report_outline.py`` prints for the report ``sdexp-dashboard`` builds at HEAD."""
    outline = load_script("report_outline")
    spec = specification(build_report("ENTITY", "sdexp", "table2_cifar10", "error", None))
    printed = outline.outline(spec)
    shown = []
    for page in DOC_PAGES:
        blocks = re.findall(r"^```(\w*)\n(.*?)^```", (ROOT / page).read_text(), re.S | re.M)
        for language, block in blocks:
            if not language and block.startswith(OUTLINE_START):
                shown.append(page)
                assert block == printed, f"{page}: the report outline is stale:\n{printed}"
    assert "README.md" in shown
    assert "runs table: failed runs: mode, budget, seed, reason" in printed


def test_the_library_example_runs():
    """The first example on docs/api.md runs as written, its assertions included (the second:
    tests/integration/test_library.py)."""
    page = (ROOT / "docs" / "api.md").read_text()
    code = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)[0]
    exec(compile(code, "docs/api.md", "exec"), {})


#: Words of instructions for one machine (a lent device, its output folder, carried wheels).
ONE_MACHINE = re.compile(r"\$OUT\b|\bcarry\b|\.whl\b|--target\b|\blent\b")
#: A git commit, as the notes write one: 7 to 40 hex digits with a letter and a digit.
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def test_no_page_carries_instructions_for_one_machine():
    found = [
        f"{page}:{n}: {line.strip()}"
        for page in DOC_PAGES
        for n, line in enumerate((ROOT / page).read_text().splitlines(), 1)
        if ONE_MACHINE.search(line)
    ]
    assert not found, "\n".join(found)


def test_readme_names_no_commit_and_stays_short():
    """README is the first five minutes: no commit (nor a time measured at one: those are on
    the manual's Performance page with their commit), at most about 200 lines."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert not [line for line in lines if COMMIT.search(line)]
    assert COMMIT.search("measured at `0b71500`") and not COMMIT.search("defaced 1234567")


def shown_p(p: float) -> str:
    """A p-value as the results pages write it: two significant digits, or below 0.001 one
    decimal and a power of ten (7.4e−10)."""
    if p < 0.001:
        mantissa, exponent = f"{p:.1e}".split("e")
        return f"{mantissa}e−{int(exponent[1:])}"
    shown = f"{p:.2g}"
    return shown if "." in shown else f"{shown}.0"


def signed(x: float, digits: int = 2, plus: bool = True) -> str:
    return f"{x:+.{digits}f}".replace("-", "−") if plus else f"{x:.{digits}f}".replace("-", "−")


def expected_result_rows() -> dict[str, list[str]]:
    """The result table's rows, from the committed files that ``sdexp-table
    docs/hypothesis_cpu/runs.csv ...`` writes: summary.csv (mean ± std over seeds) and
    verdict.csv (the paired regime test)."""
    import pandas as pd

    folder = ROOT / "docs" / "hypothesis_cpu"
    summary = pd.read_csv(folder / "summary.csv")
    verdict = pd.read_csv(folder / "verdict.csv")
    regimes = verdict[verdict.test == "paired"].set_index("regime").loc[["small", "large"]]
    rows = {}
    for mode, name in (("sensemode", "SenseMode"), ("uniform", "Uniform")):
        cells = summary[summary["mode"] == mode].set_index("budget").loc[[0.2, 0.8]]
        rows[name] = [f"{r.mean:.2f} ± {r.std:.1f}" for r in cells.itertuples()]
    paired = [
        f"{signed(r.effect, plus=r.effect > 0)} ({signed(r.ci_low, plus=r.ci_low > 0)} to "
        f"{signed(r.ci_high, plus=r.ci_high > 0)})"
        for r in regimes.itertuples()
    ]
    rows["SenseMode − Uniform, paired (95% CI)"] = paired
    percent = [f"{signed(r.relative, 0, plus=r.relative > 0)}%" for r in regimes.itertuples()]
    rows["the same in % of Uniform's mean"] = percent
    rows["one-sided p: paired t, sign flips"] = [
        f"{shown_p(r.p_t)}, {shown_p(r.p_perm)}" for r in regimes.itertuples()
    ]
    rows["beyond the 0.3-point margin: paired t, sign flips"] = [
        f"{shown_p(r.p_t_margin)}, {shown_p(r.p_perm_margin)}" for r in regimes.itertuples()
    ]
    rows["equivalent within ±0.3 points: TOST p"] = [
        shown_p(r.p_tost) for r in regimes.itertuples()
    ]
    rows["class"] = list(regimes.conclusion)
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/hypothesis_cpu/README.md"])
def test_the_result_shown_is_the_committed_verdict(page):
    """The Budget Hypothesis' result table, on README and on its page, is the committed
    summary.csv and verdict.csv as rounded there (those files regenerate at HEAD from runs.csv:
    tests/e2e/test_regenerate.py): a change of the verdict that is not carried to the pages
    fails here."""
    expected = expected_result_rows()
    shown = {
        cells[0]: cells[1:] for cells in table_rows((ROOT / page).read_text()) if len(cells) == 3
    }
    compared = [label for label in expected if label in shown]
    assert len(compared) >= 7, f"{page}: the result table is missing rows: {sorted(shown)}"
    for label in compared:
        assert shown[label] == expected[label], f"{page}, {label}"


def test_the_budget_grid_shown_is_the_committed_summary():
    """docs/budget_cpu/README.md's table (test error, mean ± std over 4 seeds, per mode and
    budget) is the committed summary.csv rounded to one decimal; "-" where the mode cannot run."""
    import pandas as pd

    folder = ROOT / "docs" / "budget_cpu"
    summary = pd.read_csv(folder / "summary.csv")
    shown: dict[str, list[str]] = {}
    for cells in table_rows((folder / "README.md").read_text()):  # the first table's rows
        shown.setdefault(cells[0], cells[1:])
    budgets = [round(0.1 * k, 1) for k in range(1, 10)]
    assert shown["b"] == [str(b) for b in budgets]
    for mode, name in (("sensemode", "SenseMode"), ("uniform", "Uniform"), ("linear", "Linear")):
        cells = summary[summary["mode"] == mode].set_index("budget")
        expected = [
            f"{cells.loc[b, 'mean']:.1f} ± {cells.loc[b, 'std']:.1f}" if b in cells.index else "-"
            for b in budgets
        ]
        assert shown[name] == expected, name
    none = summary[summary["mode"] == "none"].iloc[0]
    assert f"No SD: {none['mean']:.1f} ± {none['std']:.1f}." in (folder / "README.md").read_text()


@pytest.mark.parametrize("page", ["README.md", "docs/hypothesis_cpu_replication/README.md"])
def test_the_replication_shown_is_the_committed_verdict(page):
    """The replication's primary outcome on README and on its page is the committed verdict.csv's
    pooled row (its tables: the plan's command; one of its cells re-runs at HEAD:
    tests/e2e/test_replication.py)."""
    import pandas as pd

    verdict = pd.read_csv(ROOT / "docs" / "hypothesis_cpu_replication" / "verdict.csv")
    row = verdict[(verdict["setup"] == "pooled") & (verdict["regime"] == "large")].iloc[0]
    text = " ".join((ROOT / page).read_text().split())
    assert row["conclusion"] == "inconclusive" and "inconclusive" in text
    assert f"{row['effect']:.2f}" in text and f"{int(row['n'])} pairs" in text
    assert f"+{row['ci_low']:.3f} to +{row['ci_high']:.3f}" in text
    assert f"p_t = {row['p_t']:.3f}, p_perm = {row['p_perm']:.3f}" in text
    assert f"TOST p = {row['p_tost']:.4f}" in text
