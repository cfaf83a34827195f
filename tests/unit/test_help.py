"""``python train.py --help`` (``conf/hydra/help/sdexp.yaml``, Hydra's ``hydra.help``): every config
group with its options, the groups one adds with ``+`` apart, and commands that compose (the
command itself: tests/e2e/test_train.py)."""

from __future__ import annotations

import re
import shlex

from hydra.core.global_hydra import GlobalHydra

from tests.helpers import CONF, compose_config, config_options, hydra_configs


def help_text() -> str:
    return compose_config([], hydra=True).hydra.help.template


def section(title: str) -> dict[str, list[str]]:
    """The groups of a section of the help and the options listed for each: a line per group
    (continued by deeper-indented lines), options separated by commas, remarks in parentheses
    and phrases (``the dataset's``) left out."""
    lines = help_text().split(f"{title} (", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    groups: dict[str, str] = {}
    for line in lines:
        if re.match(r"  \S", line):
            group, options = line.split(maxsplit=1)
            groups[group] = options
        else:
            groups[group] += " " + line.strip()
    return {
        group: [
            o.strip() for o in re.sub(r"\([^)]*\)", "", text).split(",") if " " not in o.strip()
        ]
        for group, text in groups.items()
    }


def group_options(group: str) -> list[str]:
    """The options Hydra finds for a group (the launchers: Hydra's and its plugins' too)."""
    with hydra_configs():
        return GlobalHydra.instance().config_loader().get_group_options(group)


def test_the_help_lists_every_group_with_its_options_default_first():
    choices = compose_config([], hydra=True).hydra.runtime.choices
    plain = {g for g in choices if not g.startswith("hydra/")} | {"hydra/launcher"}
    listed = section("Config groups")
    assert set(listed) == plain  # no sweep or scale among them: they are added with +
    for group, options in listed.items():
        assert sorted(options) == sorted(group_options(group)), group
        if group != "recipe":  # the dataset's by default (recipe: ${dataset})
            assert options[0] == choices[group], group


def test_the_help_lists_the_groups_to_add_with_a_plus():
    train_groups = {g for g in compose_config([], hydra=True).hydra.runtime.choices}
    theory = {"experiment"}  # python -m sdexp.theory's
    added = {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_")}
    added -= train_groups | theory | {"hydra"}
    listed = section("Groups to add")
    assert set(listed) == {f"+{group}" for group in added} == {"+sweep", "+scale"}
    for group in added:
        assert sorted(listed[f"+{group}"]) == config_options(group), group


def test_every_command_of_the_help_composes():
    commands = [line.strip() for line in help_text().splitlines() if line.startswith("  python")]
    assert "python train.py mode=sensemode budget=0.3" in commands
    assert any("hydra.sweeper.dry_run=true" in c for c in commands)
    for command in commands:
        overrides = shlex.split(command)[2:]
        assert compose_config(overrides, hydra=True).hydra.job.name == "train", command
