"""What a sweep cost, read from its runs (``sdexp-table``): device-hours per table and device.

A run's device-hours are ``RunResult.device_hours`` (its fit's time times its device share, from
``results.json``; ``markdown`` says what that counts). Failed runs count: they held the device
too. Missing runs cost nothing that is known.
"""

from __future__ import annotations

import pandas as pd

#: One row per table (setup) and device: the runs that record a time, what they cost in all and
#: the part of it the failed runs took.
COLUMNS = ["setup", "table", "device", "runs", "device_hours", "failed_hours"]
UNKNOWN = "device not recorded"  # results.json of an earlier version


def cost(runs: pd.DataFrame, titles: dict[str, str]) -> pd.DataFrame:
    """Per setup and device, from ``collect``'s rows; ``titles`` names each setup's table."""
    hours = pd.to_numeric(runs["device_hours"])
    timed = runs[hours.notna()].assign(
        device=runs["device"].fillna(UNKNOWN),
        device_hours=hours,
        failed_hours=hours.where(runs["status"] == "failed", 0.0),
    )
    grouped = timed.groupby(["setup", "device"], sort=False)
    found = grouped[["device_hours", "failed_hours"]].sum().assign(runs=grouped.size())
    found = found.reset_index().assign(table=lambda f: f["setup"].map(titles))
    return found.reindex(columns=COLUMNS)


def markdown(found: pd.DataFrame) -> str:
    """The cost as a markdown table, with what it counts."""
    names = {"device_hours": "device-hours", "failed_hours": "of which failed runs"}
    shown = found.drop(columns="setup").rename(columns=names)
    return (
        "### Cost\n\n"
        + shown.to_markdown(index=False, floatfmt=".3g")
        + "\n\nDevice-hours: each run's train_time_s (the fit: training epochs with their "
        "validation passes and the graphs' capture and compilation; not the test passes or "
        "data loading) times its device_share (DDP's ranks over the runs of a local sweep "
        "sharing the device), as results.json records them.\n"
    )
