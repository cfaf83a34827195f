"""The manual's configuration page, docs/configuration.md, written from conf/: every config
group, every option with its file's own words and every key with its value and comment.

    python scripts/config_reference.py > docs/configuration.md   # after editing conf/
    python scripts/config_reference.py --check                    # exit 1 if the page is stale

The page is never edited by hand: tests/unit/test_docs.py fails while it differs from what this
script writes, so a change to conf/ that is not regenerated here fails the tests. A group this
script does not describe (a new folder of conf/) stops it with one line: add it to ``GROUPS``.
Reads text files only (no Hydra, no sdexp).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PAGE = ROOT / "docs" / "configuration.md"
COMMAND = "python scripts/config_reference.py > docs/configuration.md"

#: Each group of conf/: which command composes it, its default and what it chooses (the page
#: that explains it). Groups added with + have no default; Hydra's own groups are listed last.
GROUPS = {
    "dataset": ("train", "cifar10", "the data ([What a run trains](training.md#data))"),
    "model": ("train", "resnet110", "the network ([What a run trains](training.md#models))"),
    "mode": (
        "train",
        "uniform",
        "how the budget is spread over the blocks ([What a run trains](training.md#modes))",
    ),
    "recipe": (
        "train",
        "the dataset's (`recipe: ${dataset}`)",
        "how a run is trained and judged ([Fidelity](fidelity.md))",
    ),
    "trainer": ("train", "default", "Lightning `Trainer` arguments"),
    "logger": ("train", "wandb", "where metrics go ([W&B](wandb.md))"),
    "sweep": (
        "train",
        "none: `+sweep=...`",
        "a budget grid ([Sweeps](sweeps.md), [results](hypothesis_cpu/README.md))",
    ),
    "scale": ("train", "none: `+scale=tiny`", "a run in seconds on a CPU, for checks"),
    "hydra/launcher": (
        "train",
        "`basic` (Hydra's)",
        "where a sweep's runs execute ([Sweeps](sweeps.md), [SLURM](slurm.md)); also Hydra's "
        "`basic` and `joblib`, and `submitit_local`, `submitit_slurm` from hydra-submitit-launcher",
    ),
    "experiment": (
        "theory",
        "depth",
        "a theory check ([Theory](theory/README.md))",
    ),
    "hydra/help": ("train", "sdexp", "the text of `python train.py --help`"),
    "hydra/job_logging": ("both", "sdexp", "the console and the log file of a run"),
    "hydra/hydra_logging": ("both", "sdexp", "Hydra's own log lines (off)"),
}
ENTRY = {"train": "`python train.py` (`conf/train.yaml`)", "theory": "`python -m sdexp.theory`"}
ENTRY["both"] = "both commands"

INTRO = f"""\
<!-- Generated from conf/ by `{COMMAND}`: edit conf/, then run it. -->
# Configuration

Every config group, option and key of `conf/`, as the files say it: this page is written from
them by `{COMMAND}` (tests/unit/test_docs.py fails while it differs from what that command
writes). Hydra composes `conf/train.yaml` (training, `python train.py`) or `conf/theory.yaml`
(the theory checks, `python -m sdexp.theory`) from one option of each group; on the command
line, `group=option` chooses an option, `+group=option` adds a group that has no default
(`+sweep=...`, `+scale=tiny`), and `key=value` sets any key (`trainer.max_epochs=10`,
`optimizer.lr=0.05`, `dataset.val_size=0`). `python train.py --help` lists the groups and the
canonical commands, `python train.py --cfg job` prints the composed config. Installed without a
checkout, the same files are the package `sdexp.conf`
([Getting started](getting-started.md#the-configs)).
"""


def header_and_body(text: str) -> tuple[str, str]:
    """A config file's opening comment (its description, as prose) and the rest, verbatim.
    ``# @package`` lines are Hydra's directives: they stay in the body."""
    lines = text.rstrip("\n").splitlines()
    words, body = [], []
    for k, line in enumerate(lines):
        if line.startswith("#") and not line.startswith("# @package"):
            words.append(line.lstrip("#").strip())
        elif line.strip() or words:
            body = lines[k:]
            break
    return " ".join(w for w in words if w), "\n".join(body)


def literal(text: str) -> str:
    """A comment as Markdown prose that reads as written: no emphasis, links or HTML."""
    for char in "\\`*_[]":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;")


def options(group: str) -> list[Path]:
    return sorted((CONF / group).glob("*.yaml"))


def groups_in_conf() -> list[str]:
    """The folders of conf/ that hold options, as group names (``hydra/launcher``)."""
    found = {p.parent.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    return sorted(found - {"."})


def yaml_block(text: str) -> list[str]:
    return ["```yaml", text, "```", ""] if text.strip() else []


def file_section(path: Path, title: str, level: str) -> list[str]:
    about, body = header_and_body(path.read_text())
    lines = [f"{level} {title}", "", f"`{path.relative_to(ROOT).as_posix()}`", ""]
    if about:
        lines += [literal(about), ""]
    return lines + yaml_block(body)


def render() -> str:
    """The whole page."""
    unknown = sorted(set(groups_in_conf()) - set(GROUPS))
    if unknown:
        raise SystemExit(
            f"error: conf/{unknown[0]}: a config group that scripts/config_reference.py does not "
            f"describe: add it to GROUPS"
        )
    out = [INTRO, "## The groups", ""]
    out += ["| group | options | default | composed by | what it chooses |"]
    out += ["|---|---|---|---|---|"]
    for group, (entry, default, what) in GROUPS.items():
        names = ", ".join(f"[`{p.stem}`](#{anchor(group, p.stem)})" for p in options(group))
        out.append(f"| `{group}` | {names} | {default} | {ENTRY[entry]} | {what} |")
    out.append("")
    for path, title in ((CONF / "train.yaml", "train.yaml"), (CONF / "theory.yaml", "theory.yaml")):
        out += file_section(path, f"Top level: `{title}`", "##")
    for group, (_, _, what) in GROUPS.items():
        out += [f"## `{group}`", "", what[0].upper() + what[1:] + ".", ""]
        for path in options(group):
            out += file_section(path, f"`{group}={path.stem}`", "###")
    return "\n".join(out).rstrip("\n") + "\n"


def anchor(group: str, option: str) -> str:
    """The id MkDocs gives the heading ``group=option`` (its toc slug: lower case, word
    characters and hyphens kept, spaces to hyphens, everything else dropped)."""
    return f"{group}{option}".replace("/", "").lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if {PAGE.relative_to(ROOT)} is stale"
    )
    args = parser.parse_args(argv)
    page = render()
    if not args.check:
        sys.stdout.write(page)
        return 0
    if PAGE.exists() and PAGE.read_text() == page:
        return 0
    print(f"error: {PAGE.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
