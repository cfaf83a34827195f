"""The results contract: what names a run, and the ``results.json`` it writes.

A run is named by its **identity**: the resolved config less the keys that do not change what it
computes (``NOT_IDENTITY``: where it writes and logs, how it shows progress, where the data
lives, how fast it runs), as a stable hash (``RunKey.identity``) plus readable fields (dataset,
model, mode, budget, seed, recipe, epochs). ``RunKey.setup`` hashes the same config less mode,
budget and seed: the runs of one table share it. The identity goes into ``results.json`` and
into every checkpoint, and is compared before anything is skipped, resumed or aggregated:

- a run is skipped only when a finished ``results.json`` in its directory has its identity
  (``completed``);
- it resumes only from a checkpoint with its identity (``sdexp.rundir``);
- the aggregator keeps runs of different setups apart (``sdexp.table``);
- a sweep names each run's directory by it (``RunKey.cell_dir``), never by the command line.

``results.json`` holds a ``RunResult``: the key's fields, the identity config, the status
("ok" or "failed", with a reason), the metric's name ("error" in % or "mse") and its values (test
metric of the final model and of the best-validation checkpoint, and which of them the recipe
reports), the survival probabilities and what they imply, timings, and the device that ran it
with the share of it the run held (what ``sdexp-table`` sums into a sweep's cost). It is
written atomically (a reader never sees half a file) with the permissions of any other file the
user writes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

RESULTS_FILE = "results.json"

#: The metric each task reports (``RunResult.metric``): the test error in % or the mean squared
#: error.
METRIC = {"classification": "error", "regression": "mse"}

#: Config keys that do not change what a run computes: where it writes and logs, how it shows
#: progress, where its data lives and how it gets there, the fast paths and torch's CPU threads
#: (same numbers up to float rounding) and the evaluation batch size (evaluation is per
#: example).
NOT_IDENTITY = (
    "output_dir",
    "overwrite",
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

#: What varies inside one table: the rest of the identity is the run's setup.
CELL = ("mode", "budget", "seed")

#: A sweep cell's directory below the sweep directory (``RunKey.cell_dir``), for the messages.
CELL_DIR = "<setup>/<mode>-b<budget>-s<seed>-<identity>"


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


def identity_config(cfg: DictConfig, budget: float) -> dict:
    """The resolved config less ``NOT_IDENTITY``, with the budget the run really uses.

    The keys are dropped before resolving: they may interpolate what only a running Hydra job
    knows (``${hydra:runtime.output_dir}``)."""
    kept = without(OmegaConf.to_container(cfg, resolve=False), ("hydra", *NOT_IDENTITY))
    return OmegaConf.to_container(OmegaConf.create({**kept, "budget": budget}), resolve=True)


def run_key(cfg: DictConfig) -> tuple[RunKey, dict]:
    """The run's key and identity config, from its config alone (no data, no model)."""
    mode = instantiate(cfg.mode)
    budget = mode.effective_budget(cfg.budget)
    config = identity_config(cfg, budget)
    model_class = get_class(cfg.model._target_)
    key = RunKey(
        dataset=instantiate(cfg.dataset, seed=cfg.seed).name,
        model=model_class.name_for(cfg.model.depth),
        mode=mode.name,
        budget=budget,
        seed=cfg.seed,
        recipe=cfg.recipe.name,
        epochs=cfg.trainer.max_epochs,
        stable=cfg.model.stable,
        num_blocks=model_class.blocks_for(cfg.model.depth),
        identity=config_hash(config),
        setup=config_hash(without(config, CELL)),
    )
    return key, config


@dataclass
class RunResult:
    """The contents of results.json."""

    key: RunKey
    config: dict  # the identity config (what ``key.identity`` hashes)
    status: str  # "ok" or "failed"
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
    version: str = ""

    @property
    def device_hours(self) -> float | None:
        """What the run cost: ``train_time_s`` times ``device_share``, in hours."""
        return None if self.train_time_s is None else self.train_time_s * self.device_share / 3600

    @property
    def test(self) -> float | None:
        """The run's number: the test metric of the model the recipe reports."""
        return self.test_best if self.report == "best" else self.test_final

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        return {**fields.pop("key"), "test": self.test, **fields}

    @classmethod
    def from_dict(cls, data: dict) -> RunResult:
        names = {f.name for f in dataclasses.fields(RunKey)}
        key = RunKey(**{k: data[k] for k in names})
        kept = {f.name for f in dataclasses.fields(cls)} - {"key"}
        return cls(key=key, **{k: v for k, v in data.items() if k in kept})


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
    """Write results.json atomically (``write_atomically``)."""
    return write_atomically(Path(run_dir) / RESULTS_FILE, json.dumps(result.to_dict(), indent=2))


def read_result(run_dir: str | Path) -> RunResult | None:
    """The run's results.json, None if there is none; ``UnreadableResult`` naming the file if it
    is empty, corrupt or not a result of this version (e.g. written without an identity)."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return None
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        kind = "missing field" if isinstance(error, KeyError) else type(error).__name__
        raise UnreadableResult(f"{path}: unreadable ({kind}: {error})") from error


def completed(run_dir: str | Path, key: RunKey) -> RunResult | None:
    """The results.json in ``run_dir`` if it says "ok" for the run named by ``key``.

    ``UnreadableResult`` propagates: callers name the file and treat the run as not finished."""
    result = read_result(run_dir)
    if result is None or result.status != "ok" or result.key.identity != key.identity:
        return None
    return result
