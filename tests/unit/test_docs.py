"""What README and the manual (docs/) promise, held to the code: the configuration page is what
``scripts/config_reference.py`` writes from conf/, README's report outline is the report
``sdexp-dashboard`` builds, the library example runs, and no page names a commit on the front
page or carries instructions for one particular machine. (The site's build and its plots:
tests/e2e/test_docs.py; the pages' commands: tests/unit/test_readme.py.)"""

from __future__ import annotations

import re
import shutil

import pytest

from sdexp.report import build_report, specification
from tests.helpers import DOC_PAGES, ROOT, load_script


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
    """The example on docs/api.md runs as written, its assertions included."""
    page = (ROOT / "docs" / "api.md").read_text()
    (code,) = re.findall(r"^```python\n(.*?)^```", page, re.S | re.M)
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
