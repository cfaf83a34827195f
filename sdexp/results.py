"""The results contract: what names a run, and the ``results.json`` it writes. Plain data: no
Hydra, no OmegaConf, no torch (the analysis reads it; the run derives a key from its config in
``sdexp.run.identity``).

A run is named by its **identity**: the resolved config less the keys that do not change what it
computes (``NOT_IDENTITY``: where it writes and logs, how it shows progress, where the data
lives, how fast it runs), as a stable hash (``RunKey.identity``) plus readable fields (dataset,
model, mode, budget, seed, recipe, epochs). ``RunKey.setup`` hashes the same config less mode,
budget and seed: the runs of one table share it. The identity goes into ``results.json`` and
into every checkpoint, and is compared before anything is skipped, resumed or aggregated:

- a run is skipped only when a finished ``results.json`` in its directory has its identity
  (``completed``);
- it resumes only from a checkpoint with its identity (``sdexp.run.directory``);
- the aggregator keeps runs of different setups apart (``sdexp.analysis.cli``);
- a sweep names each run's directory by it (``RunKey.cell_dir``), never by the command line.

``results.json`` holds a ``RunResult``: the key's fields, the identity config, the status
("ok" or "failed", with a reason), the metric ("error" in % or "mse") and its test values (final
model, best-validation checkpoint, which one the recipe reports), the survival probabilities and
what they imply, timings, the device and its share the run held (``sdexp-table`` sums the cost),
the code that made it (``sdexp.provenance``; not identity). Strict JSON (null for what is not
finite), written atomically, with the permissions of any file the user writes; read back against
these types (``RunResult.from_dict``). ``RunResult.summary`` and ``history_row`` are what a run
gives W&B at its end, the keys a dashboard reads (``sdexp.tracking.dashboard``; a test holds them to
these). ``predictions.csv`` beside it: the per-example test predictions (``sdexp.predictions``).

``sweep.json`` holds a sweep's ``Plan``: the cells it planned (``PlannedCell``: the run's key,
its directory and overrides) and the cells it left out (``LeftOutCell``: the mode cannot run
that budget). The grid sweeper writes it (``write_plan``), ``sdexp-table`` reads it
(``read_plan``) to count the planned runs that never finished.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from sdexp.provenance import Code

RESULTS_FILE = "results.json"
#: Beside results.json: the test set's per-example predictions (``sdexp.predictions``).
PREDICTIONS_FILE = "predictions.csv"

#: The metric each task reports (``RunResult.metric``): the test error in % or the MSE.
METRIC = {"classification": "error", "regression": "mse"}

#: Config keys that do not change what a run computes: where it writes and logs, how it shows
#: progress, where its data lives and how it gets there, the fast paths and torch's CPU threads
#: (same numbers up to float rounding) and the evaluation batch size (evaluation is per
#: example).
NOT_IDENTITY = (
    "output_dir",
    "overwrite",
    "rerun_other_code",
    "threads",
    "logger",
    "run",
    "speed",
    "dataset.data_dir",
    "dataset.download",
    "dataset.verify_md5",
    "dataset.on_device",
    "dataset.eval_batch_size",
    "trainer.accelerator",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)

#: The keys that vary inside one table (a setup): the identity less them is the run's setup.
NOT_SETUP = ("mode", "budget", "seed")

#: A sweep cell's directory below the sweep directory (``RunKey.cell_dir``), for the messages.
CELL_DIR = "<setup>/<mode>-b<budget>-s<seed>-<identity>"

#: The summary's numbers a finished run also logs as one W&B history row (``history_row``).
HISTORY = ("budget", "test", "expected_depth", "epoch_time_s")


class UnreadableResult(Exception):
    """A results.json that cannot be read as a RunResult; the message names the file."""


def canonical(value: Any) -> Any:
    """``value`` with every number as a float, so that budget=1 and budget=1.0 hash alike."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def config_hash(config: dict) -> str:
    """A stable 16-hex-digit hash of a plain config (key order and int/float spelling ignored)."""
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def differences(old: dict, new: dict, limit: int = 6) -> str:
    """The keys two configs disagree on, as ``key: old -> new, ...`` (``limit`` at most)."""
    a, b = flatten(old), flatten(new)
    missing = "<unset>"
    keys = sorted(
        k
        for k in a.keys() | b.keys()
        if canonical(a.get(k, missing)) != canonical(b.get(k, missing))
    )
    shown = [f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}" for k in keys[:limit]]
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more


def without(config: dict, keys: tuple[str, ...]) -> dict:
    """``config`` less the (dotted) ``keys``."""
    kept = copy.deepcopy(config)
    for key in keys:
        *parents, last = key.split(".")
        node = kept
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return kept


@dataclass(frozen=True)
class RunKey:
    """What names a run: readable fields and the hashes of what it computes."""

    dataset: str
    model: str
    mode: str
    budget: float  # the budget the run really uses (1.0 for mode none)
    seed: int
    recipe: str
    epochs: int
    stable: bool
    num_blocks: int
    identity: str  # hash of the identity config
    setup: str  # hash of the identity config less mode, budget and seed

    @property
    def name(self) -> str:
        """A human-readable, unique name: ``cifar10-resnet110-sensemode-b0.3-s0-<setup>``."""
        return (
            f"{self.dataset}-{self.model}-{self.mode}-b{self.budget:g}-s{self.seed}"
            f"-{self.setup[:6]}"
        )

    @classmethod
    def from_dict(cls, data: dict) -> RunKey:
        """The key's fields of ``data`` (a results.json, a sweep.json cell)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    @property
    def cell_dir(self) -> str:
        """Where a sweep writes the run, below its sweep directory (``CELL_DIR``): e.g.
        ``767c53/sensemode-b0.3-s0-4d5e6f``, the first 6 digits of the setup and identity hashes.

        A function of the identity alone, so the same run lands in the same directory however
        the command line spells it (a fast path, a default spelled out, another order, 0.70);
        the setup's directory holds one table's runs; the identity's digits keep apart runs
        that differ only in what the setup leaves out besides the cell (the mode's options)."""
        cell = f"{self.mode}-b{self.budget:g}-s{self.seed}"
        return f"{self.setup[:6]}/{cell}-{self.identity[:6]}"


@dataclass
class RunResult:
    """The contents of results.json."""

    key: RunKey
    config: dict  # the identity config (what ``key.identity`` hashes)
    status: Literal["ok", "failed"]  # (a run still training holds "running", never written)
    reason: str | None = None  # why it failed
    metric: str = "error"  # "error" (test error in %) or "mse"
    report: str = "final"  # which test value is the run's number: "best" or "final"
    test_final: float | None = None  # the final model's test metric
    test_best: float | None = None  # the best-validation checkpoint's test metric
    best_val: float | None = None  # the best validation metric
    test_loss: float | None = None  # the final model's test loss
    survival: list[float] = field(default_factory=list)
    sensitivity: list[float] | None = None  # SenseMode's S_l, the mean over mode.batches
    sensitivity_se: list[float] | None = None  # the standard error of each S_l
    expected_depth: float | None = None
    depth_variance: float | None = None
    train_time_s: float | None = None  # Lightning's Timer over fit, across resumes
    epoch_times_s: list[float] = field(default_factory=list)  # every epoch, across resumes
    device: str | None = None  # what trained it: the GPU's name ("NVIDIA H200") or "cpu"
    device_share: float = 1.0  # devices it held: DDP's ranks / runs sharing one (a local sweep)
    code: Code | None = None  # the code that made it (None: written before runs recorded it)

    @property
    def device_hours(self) -> float | None:
        """What the run cost: ``train_time_s`` times ``device_share``, in hours."""
        return None if self.train_time_s is None else self.train_time_s * self.device_share / 3600

    @property
    def test(self) -> float | None:
        """The run's number: the test metric of the model the recipe reports."""
        return self.test_best if self.report == "best" else self.test_final

    def summary(self) -> dict:
        """The run's W&B summary: what a dashboard filters and groups runs by, the key's plain
        fields and the numbers (``epoch_time_s``: the median training epoch)."""
        key = self.key
        epoch = statistics.median(self.epoch_times_s) if self.epoch_times_s else None
        return {
            **{k: getattr(key, k) for k in ("dataset", "model", "mode", "budget", "seed")},
            "recipe": key.recipe,
            "setup": key.setup,
            "status": self.status,
            "reason": self.reason,
            "metric": self.metric,
            "report": self.report,
            "test": self.test,
            "test_final": self.test_final,
            "test_best": self.test_best,
            "best_val": self.best_val,
            "expected_depth": self.expected_depth,
            "depth_variance": self.depth_variance,
            "epoch_time_s": epoch,
        }

    def history_row(self) -> dict | None:
        """One W&B history row a finished run logs at its end (None for a failed run): a line
        plot's x-axis must be a logged metric, so that plotting against the budget needs it."""
        if self.status != "ok":
            return None
        summary = self.summary()
        return {k: summary[k] for k in HISTORY}

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        return {**fields.pop("key"), "test": self.test, **fields}

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """``data`` (a parsed results.json), each field of the type declared here and in
        ``RunKey`` (pydantic, strict: a budget "0.3" is no number, an unknown status is refused);
        ValueError names the first field that is not."""
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object, got {type(data).__name__}")
        key = {f.name: data[f.name] for f in dataclasses.fields(RunKey) if f.name in data}
        fields = {f.name for f in dataclasses.fields(cls)} - {"key"}
        nested = {"key": key, **{k: v for k, v in data.items() if k in fields}}
        try:  # through JSON: strict mode takes a dataclass's fields from JSON objects only
            return contract().validate_json(json.dumps(nested), strict=True)
        except ValidationError as error:
            first = error.errors()[0]
            where = first["loc"][1:] if first["loc"][0] == "key" else first["loc"]  # key: flat
            got = "" if first["type"] == "missing" else f", got {first['input']!r}"
            why = f"{'.'.join(map(str, where))}: {first['msg'].lower()}{got}"
            raise ValueError(why) from None


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then a rename. A reader
    never sees half a file, and a write that fails (a full disk, a signal) leaves no temporary
    file behind and ``path`` as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)  # the umask's permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_result(run_dir: str | Path, result: RunResult) -> Path:
    """Write results.json atomically (``write_atomically``) as strict JSON: a value that is not
    finite (NaN, infinity) is null (a failed run's reason says what it was)."""
    finite = json.loads(json.dumps(result.to_dict()), parse_constant=lambda _: None)
    text = json.dumps(finite, indent=2, allow_nan=False)
    return write_atomically(Path(run_dir) / RESULTS_FILE, text)


@functools.cache
def contract() -> TypeAdapter:
    """pydantic's validator of ``RunResult``, built at the first read."""
    return TypeAdapter(RunResult)


def read_result(run_dir: str | Path) -> RunResult | None:
    """The run's results.json, None if there is none; ``UnreadableResult`` naming the file if it
    is empty, corrupt or not a result of this version: a field missing, or not of its type
    (``RunResult.from_dict``)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise UnreadableResult(f"{path}: unreadable ({error})") from error


def completed(run_dir: str | Path, key: RunKey) -> RunResult | None:
    """The results.json in ``run_dir`` if it says "ok" for the run named by ``key``.

    ``UnreadableResult`` propagates: callers name the file and treat the run as not finished."""
    result = read_result(run_dir)
    if result is None or result.status != "ok" or result.key.identity != key.identity:
        return None
    return result


# --- the sweep plan (sweep.json) ------------------------------------------------------------------

PLAN_FILE = "sweep.json"


class UnreadablePlan(Exception):
    """A sweep.json that cannot be read as a Plan; the message names the file."""


@dataclass(frozen=True)
class PlannedCell:
    """A run a sweep planned: its key, its directory (relative to the sweep directory), the
    overrides that launch it, its mode's options and the metric and report of its table."""

    key: RunKey
    dir: str
    overrides: list[str]
    mode_options: dict
    metric: str
    report: str

    def to_dict(self) -> dict:
        fields = {"mode_options": self.mode_options, "metric": self.metric, "report": self.report}
        return {"dir": self.dir, "overrides": list(self.overrides), **asdict(self.key), **fields}

    @classmethod
    def from_dict(cls, data: dict) -> PlannedCell:
        options = {k: data[k] for k in ("dir", "overrides", "metric", "report")}
        return cls(RunKey.from_dict(data), mode_options=data.get("mode_options") or {}, **options)


@dataclass(frozen=True)
class LeftOutCell:
    """A cell a sweep does not run, and why: its mode cannot meet its budget (the "-" cells of
    the paper's Table 2); ``setup``, ``mode`` and ``budget`` place it in its table."""

    overrides: list[str]
    reason: str
    setup: str
    mode: str
    budget: float


@dataclass
class Plan:
    """The cells a sweep planned and those it left out (``sweep.json``)."""

    cells: list[PlannedCell] = field(default_factory=list)
    left_out: list[LeftOutCell] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "cells": [c.to_dict() for c in self.cells],
            "left_out": list(map(asdict, self.left_out)),
        }


def read_plan(path: str | Path) -> Plan:
    """The plan in ``path`` (a sweep.json); ``UnreadablePlan`` naming the file if it is corrupt."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cells = [PlannedCell.from_dict(c) for c in data["cells"]]
        left_out = [LeftOutCell(**c) for c in data.get("left_out", [])]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UnreadablePlan(f"{path}: unreadable ({type(error).__name__}: {error})") from error
    return Plan(cells, left_out)


def write_plan(sweep_dir: Path, plan: Plan) -> Path:
    """Record ``plan`` in ``<sweep_dir>/sweep.json`` atomically, keeping the cells of earlier,
    wider sweeps into the same directory: a cell planned again replaces its entry, a left-out
    cell is added once. An unreadable file is rewritten from this plan."""
    path = Path(sweep_dir) / PLAN_FILE
    try:
        earlier = read_plan(path) if path.exists() else Plan()
    except UnreadablePlan:
        earlier = Plan()
    cells = {c.key.identity: c for c in earlier.cells} | {c.key.identity: c for c in plan.cells}
    left_out = earlier.left_out + [c for c in plan.left_out if c not in earlier.left_out]
    text = json.dumps(Plan(list(cells.values()), left_out).to_dict(), indent=2)
    return write_atomically(path, text)
