"""The manual as a site: ``mkdocs build --strict`` (what CI runs) builds it, and every plot under
docs/ is shown on a results or performance page; the replication plan's power command prints
what the plan says it prints. (The pages' words against the code: tests/unit/test_docs.py.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest

from tests.helpers import ROOT, run_train, user_env

#: The pages that show the plots: the results beside their data, and the measurements.
PLOT_PAGES = [
    "hypothesis_cpu",
    "hypothesis_cpu_replication",
    "budget_cpu",
    "sensitivity_noise",
    "theory",
    "performance",
]


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources += [value for name, value in attrs if name == "src" and value]


def shown_images(page: Path, site: Path) -> set[str]:
    """The site-relative paths of the images a built page shows."""
    parser = Images()
    parser.feed(page.read_text())
    folder = PurePosixPath(page.parent.relative_to(site).as_posix())
    shown = set()
    for source in parser.sources:
        parts: list[str] = []
        for part in (folder / source).parts:
            if part == "..":
                parts.pop()
            elif part != ".":
                parts.append(part)
        shown.add("/".join(parts))
    return shown


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it (strict: a broken link, anchor or page fails)."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=user_env(NO_MKDOCS_2_WARNING="1"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_page(site):
    for page in ["index", "configuration", "api", "development", "slurm", "hypothesis_cpu"]:
        assert (site / page / "index.html").exists() or (site / f"{page}.html").exists(), page
    api = (site / "api" / "index.html").read_text()
    assert "Lemma 1" in api and "SurvivalGate" in api and "SenseMode" in api  # the docstrings


@pytest.mark.slow
def test_every_plot_is_shown_on_a_results_or_performance_page(site):
    plots = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.png")}
    assert len(plots) >= 15
    shown = set()
    for folder in PLOT_PAGES:
        shown |= shown_images(site / folder / "index.html", site)
    missing = sorted(plots - shown)
    assert not missing, f"plots under docs/ on no results or performance page: {missing}"
    for plot in plots:
        copied = site / plot
        assert copied.read_bytes() == (ROOT / "docs" / plot).read_bytes(), plot


def test_the_plans_power_command_prints_what_the_plan_says():
    """docs/hypothesis_cpu_replication/PLAN.md: its power command, run in the checkout (it reads
    docs/hypothesis_cpu/runs.csv), prints the line the plan quotes."""
    plan = (ROOT / "docs" / "hypothesis_cpu_replication" / "PLAN.md").read_text()
    (command,) = re.findall(r"^```bash\n(python -c .*?)\n```", plan, re.S | re.M)
    printed = re.search(r"^prints `([^`]+)`", plan, re.M)[1]
    done = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == printed


def test_the_example_of_where_runs_go_is_the_dry_runs(tmp_path):
    """docs/sweeps.md names the directory and the W&B name of one Table 2 run as its dry run
    prints them: a change of the run's identity or setup shows there."""
    page = (ROOT / "docs" / "sweeps.md").read_text()
    (shown,) = re.findall(r"e\.g\.\s+`outputs/sweeps/table2_cifar10/(\w+)/(\S+)/`", page)
    setup, cell = shown
    assert cell.startswith("sensemode-b0.3-s0-")
    done = run_train(
        "+sweep=table2_cifar10", "hydra.sweeper.dry_run=true", "mode=sensemode", "budget=0.3",
        "seed=0", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"-> outputs/sweeps/table2_cifar10/{setup}/{cell}\n" in done.stdout, done.stdout
    assert f"(`cifar10-resnet110-sensemode-b0.3-s0-{setup}`)" in " ".join(page.split())
