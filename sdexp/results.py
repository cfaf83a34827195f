"""The results contract: what names a run, and the ``results.json`` and ``sweep.json`` it writes.
Plain data: no Hydra, no OmegaConf, no torch (the analysis reads it).

A run is named by its **identity**: the resolved config less ``NOT_IDENTITY`` (what does not
change what it computes), hashed (``RunKey.identity``) beside readable fields; ``RunKey.setup``
hashes it less mode, budget and seed (one table). The identity is compared before a run is
skipped (``completed``), resumed (``sdexp.run.directory``) or aggregated, and names a sweep
cell's directory (``RunKey.cell_dir``). ``results.json`` holds a ``RunResult`` as strict JSON,
written atomically and read back against these types. ``sweep.json`` holds a sweep's ``Plan``:
its planned cells and those left out (the mode cannot meet the budget).
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
PREDICTIONS_FILE = "predictions.csv"

#: The metric each task reports (``RunResult.metric``): the test error in % or the MSE.
METRIC = {"classification": "error", "regression": "mse"}

#: Config keys that do not change what a run computes (the fast paths and CPU threads: the same
#: numbers up to float rounding; the evaluation batch size: evaluation is per example).
NOT_IDENTITY = (
    *("output_dir", "overwrite", "rerun_other_code", "threads", "logger", "run", "speed"),
    *("dataset.data_dir", "dataset.download", "dataset.verify_md5", "dataset.on_device"),
    *("dataset.eval_batch_size", "trainer.accelerator", "trainer.default_root_dir"),
    *("trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps"),
)

#: The keys that vary inside one table (a setup): the identity less them is the run's setup.
NOT_SETUP = ("mode", "budget", "seed")

CELL_DIR = "<setup>/<mode>-b<budget>-s<seed>-<identity>"

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
    budget: float  # the budget the run uses (1.0 for mode none)
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
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    @property
    def cell_dir(self) -> str:
        """Where a sweep writes the run (``CELL_DIR``), e.g. ``767c53/sensemode-b0.3-s0-4d5e6f``:
        a function of the identity alone, however the command line spells it."""
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
        """The run's W&B summary (``sdexp.tracking.dashboard``; ``epoch_time_s``: the median)."""
        key = ("dataset", "model", "mode", "budget", "seed", "recipe", "setup")
        own = ("status", "reason", "metric", "report", "test", "test_final", "test_best")
        own += ("best_val", "expected_depth", "depth_variance")
        return {
            **{k: getattr(self.key, k) for k in key},
            **{k: getattr(self, k) for k in own},
            "epoch_time_s": statistics.median(self.epoch_times_s) if self.epoch_times_s else None,
        }

    def history_row(self) -> dict | None:
        """The W&B history row of a finished run (None if failed): a line plot's x-axis must be
        a logged metric."""
        if self.status != "ok":
            return None
        summary = self.summary()
        return {k: summary[k] for k in HISTORY}

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        return {**fields.pop("key"), "test": self.test, **fields}

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """``data`` (a parsed results.json) checked strictly against the declared types
        (pydantic); ValueError names the first field that is not of its type."""
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
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename); a write
    that fails leaves ``path`` as it was and no temporary file."""
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
    """Write results.json atomically as strict JSON: a value that is not finite is null."""
    finite = json.loads(json.dumps(result.to_dict()), parse_constant=lambda _: None)
    text = json.dumps(finite, indent=2, allow_nan=False)
    return write_atomically(Path(run_dir) / RESULTS_FILE, text)


#: pydantic's validator of ``RunResult``, built at the first read.
contract = functools.cache(lambda: TypeAdapter(RunResult))


def read_result(run_dir: str | Path) -> RunResult | None:
    """The run's results.json, None if there is none; ``UnreadableResult`` if it is empty,
    corrupt or has a field missing or not of its type."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise UnreadableResult(f"{path}: unreadable ({error})") from error


def completed(run_dir: str | Path, key: RunKey) -> RunResult | None:
    """The results.json in ``run_dir`` if it says "ok" for the run named by ``key``."""
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
    """A run a sweep planned: its key, directory (below the sweep's), overrides, mode options,
    and its table's metric and report."""

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
    """A cell a sweep does not run because its mode cannot meet its budget (Table 2's "-")."""

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
        left_out = list(map(asdict, self.left_out))
        return {"cells": [c.to_dict() for c in self.cells], "left_out": left_out}


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
    """Record ``plan`` in ``<sweep_dir>/sweep.json`` atomically, merged into the cells of earlier
    sweeps there (a cell planned again replaces its entry); an unreadable file is replaced."""
    path = Path(sweep_dir) / PLAN_FILE
    try:
        earlier = read_plan(path) if path.exists() else Plan()
    except UnreadablePlan:
        earlier = Plan()
    cells = {c.key.identity: c for c in earlier.cells} | {c.key.identity: c for c in plan.cells}
    left_out = earlier.left_out + [c for c in plan.left_out if c not in earlier.left_out]
    text = json.dumps(Plan(list(cells.values()), left_out).to_dict(), indent=2)
    return write_atomically(path, text)
