"""Config checks: every value a user can set is checked by type and range within seconds, before
data, model or Lightning load, and a bad one is a ``ConfigError`` naming the option.

The types are declared once, where the values are used, and pydantic checks the values against
them (``sdexp.run.typecheck``): Hydra's structured configs would declare them a second time.
Ranges are the constructors' own checks, on cheap objects (the model on the meta device); the
budget is checked once (``Mode.check``), and the run reuses what the check built.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.overrides import TorchFunctionMode

from sdexp.errors import ConfigError
from sdexp.recipe import Recipe
from sdexp.run.sharing import check_threads
from sdexp.run.typecheck import check_target, check_values
from sdexp.survival import Mode

if TYPE_CHECKING:
    from sdexp.loader import TensorDataModule

SEED_RANGE = (0, 2**32 - 1)  # what numpy (and so pl.seed_everything) accepts


@dataclass
class TopLevel:
    """The keys of ``conf/train.yaml`` that are not groups of their own."""

    budget: float
    seed: int
    overwrite: bool
    rerun_other_code: bool
    threads: int | Literal["auto"] | None
    output_dir: str
    optimizer: dict
    scheduler: dict | None
    speed: dict
    callbacks: dict
    run: dict
    recipe: dict
    trainer: dict
    dataset: dict
    model: dict
    mode: dict
    logger: dict | None


@dataclass
class RunNames:
    """``run``: the W&B name, group, tags and id (null: derived from the run's key)."""

    name: str | None = None
    group: str | None = None
    tags: list[str] | None = None
    id: str | None = None


@dataclass
class Speed:
    """``speed.*``: fast paths for accelerators; they agree with the plain path up to float
    rounding (so they are not part of a run's identity)."""

    channels_last: bool = False  # NHWC memory format for the convolutions (tensor cores)
    compile_blocks: bool = False  # torch.compile each residual branch; the skip stays eager
    cuda_graphs: bool = False  # stem, each block's kept path, head + loss as CUDA graphs
    # both: each graphed piece compiled, then captured (fused kernels in the graphs)
    fused_optimizer: bool = False  # the optimizer's fused kernel (fused=True): one launch


def resolved(cfg: DictConfig) -> dict:
    """The config as plain values; an interpolation that fails names its key. ``output_dir`` is
    taken as written: outside a running Hydra job ``${hydra:runtime.output_dir}`` has no value."""
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    if str(container.get("output_dir", "")).startswith("${hydra:"):
        container["output_dir"] = "<output dir>"
    try:
        return OmegaConf.to_container(
            OmegaConf.create(container), resolve=True, throw_on_missing=True
        )
    except OmegaConfBaseException as error:
        raise ConfigError(str(getattr(error, "full_key", "") or "config"), str(error)) from error


#: The groups whose types a dataclass declares, and how the one line names their owner.
DECLARED = {"recipe": (Recipe, "the recipe"), "run": (RunNames, "run"), "speed": (Speed, "speed")}


def check_types(values: dict, groups: tuple[str, ...]) -> None:
    """The keys of ``groups`` against their declared types."""
    for group in groups:
        if group in DECLARED:
            schema, owner = DECLARED[group]
            check_values(values[group], schema, group, owner)
        elif group == "callbacks":
            for name, callback in values["callbacks"].items():
                check_target(callback, f"callbacks.{name}")
        elif values.get(group):
            check_target(values[group], group)
        if group == "speed":
            optimizer = get_object(values["optimizer"]["_target_"])
            check_speed(values["speed"], values["trainer"], optimizer)


def check_seed(seed: int) -> None:
    lo, hi = SEED_RANGE
    if not lo <= seed <= hi:
        raise ConfigError("seed", f"an integer in [{lo}, {hi}], got {seed}")


class SkipInit(TorchFunctionMode):
    """``torch.nn.init``'s functions and their in-place fills return their tensor untouched: on
    the meta device the fills import ``torch._dynamo`` (over a second of a dry run)."""

    SKIPPED = (torch.Tensor.normal_, torch.Tensor.uniform_)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED or getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


#: Lightning strategies that let DDP's gradient reduction go on without the parameters of the
#: blocks a step dropped (``conf/trainer/ddp.yaml``).
UNUSED_PARAMETERS_STRATEGIES = (
    "ddp_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_true",
)


def device_count(accelerator: str, devices: Any) -> int:
    """How many devices Lightning would train on: ``devices`` is a number (-1: all), a list of
    indices, a string of them ("0,1") or "auto" (all GPUs, one CPU process)."""
    gpu = accelerator in ("gpu", "cuda") or accelerator == "auto" and torch.cuda.is_available()
    available = torch.cuda.device_count() if gpu else os.cpu_count() or 1
    if devices in ("auto", None):
        return available if gpu else 1
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices or devices == "":
            return len([d for d in devices.split(",") if d.strip()])
        devices = int(devices) if devices.lstrip("-").isdigit() else devices
    if devices == -1:
        return available
    return devices if isinstance(devices, int) else 1


def check_trainer(trainer: dict) -> None:
    """What Lightning would refuse, or crash on, with a traceback."""
    accelerator = str(trainer.get("accelerator", "auto"))
    cuda = torch.cuda.is_available()
    available = {"gpu": cuda, "cuda": cuda, "mps": torch.backends.mps.is_available()}
    if not available.get(accelerator, True):
        raise ConfigError(
            "trainer.accelerator",
            f"{accelerator}: this machine has none (torch sees no {accelerator.upper()} device): "
            "use trainer.accelerator=cpu, or auto (a GPU when there is one)",
        )
    count = device_count(accelerator, trainer.get("devices", "auto"))
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and count > gpus:
        raise ConfigError("trainer.devices", f"{count} GPUs asked, this machine has {gpus}")
    strategy = trainer.get("strategy", "auto")
    handles_unused = (
        strategy.get("find_unused_parameters") is True
        if isinstance(strategy, dict)
        else str(strategy) in UNUSED_PARAMETERS_STRATEGIES
    )
    if count > 1 and not handles_unused:
        raise ConfigError(
            "trainer.devices",
            f"{count} devices need trainer=ddp (strategy {UNUSED_PARAMETERS_STRATEGIES[0]}: the "
            f"blocks a step drops get no gradient, which strategy {strategy} cannot reduce)",
        )
    limit = trainer.get("limit_train_batches")
    batches = isinstance(limit, int) and not isinstance(limit, bool) and limit >= 1
    if limit is not None and not (batches or isinstance(limit, float) and 0 < limit <= 1):
        raise ConfigError(
            "trainer.limit_train_batches",
            f"a number of batches (at least 1) or a fraction in (0, 1] of each epoch, or null "
            f"(all), got {limit!r}: a run must train",
        )


def check_speed(speed: dict, trainer: dict, optimizer: Callable) -> None:
    """What the fast paths cannot do with the ``trainer`` and the ``optimizer``."""
    if speed.get("cuda_graphs"):
        accelerator = str(trainer.get("accelerator", "auto"))
        if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
            where = f"trainer.accelerator={accelerator}" if accelerator != "auto" else "no GPU"
            raise ConfigError(
                "speed.cuda_graphs",
                f"CUDA graphs need a CUDA GPU and this run has none ({where}): "
                "set speed.cuda_graphs=false",
            )
        if (trainer.get("accumulate_grad_batches") or 1) > 1:
            raise ConfigError(
                "speed.cuda_graphs",
                "not with trainer.accumulate_grad_batches > 1: a graph's gradient buffers are "
                "overwritten by the next batch's backward pass before the optimizer step",
            )
        if "ddp" in str(trainer.get("strategy", "")):
            raise ConfigError(
                "speed.cuda_graphs",
                "runs on one device only, not with trainer=ddp (several runs on one GPU: "
                "hydra/launcher=gpu_shared)",
            )
    if speed.get("fused_optimizer") and "fused" not in inspect.signature(optimizer).parameters:
        name = getattr(optimizer, "__qualname__", optimizer)
        raise ConfigError("speed.fused_optimizer", f"{name} has no fused implementation")


@dataclass(frozen=True)
class Built:
    """What the check built, for the run to reuse: the mode, the data module (no data read), and
    the name and L of the model it built on the meta device."""

    mode: Mode
    datamodule: TensorDataModule
    model: str
    num_blocks: int


@dataclass(frozen=True)
class Checked(Built):
    """``Built``, and the budget the run uses, checked once (``Mode.check``)."""

    budget: float


def check_ranges(cfg: DictConfig, values: dict) -> Built:
    """Ranges the constructors do not check; returns what the check built."""
    check_seed(values["seed"])
    check_threads(values["threads"])
    epochs = values["trainer"].get("max_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("trainer.max_epochs", f"an integer, at least 1, got {epochs!r}")
    check_trainer(values["trainer"])
    mode = instantiate(cfg.mode)
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)  # reads no data
    with torch.device("meta"), SkipInit():  # the model's own checks, no weights allocated
        model = instantiate(
            cfg.model,
            input_shape=datamodule.input_shape,
            num_outputs=datamodule.num_outputs,
            mask_seed=cfg.seed,
        )
    if values["recipe"]["report"] == "best" and not datamodule.has_validation:
        raise ConfigError(
            "recipe.report",
            "best needs a validation split to choose the checkpoint (the dataset has none): "
            "set recipe.report=final, or give the dataset a validation split",
        )
    return Built(mode, datamodule, model.name, model.num_blocks)


def check_optimizer(cfg: DictConfig) -> None:
    """torch.optim's own checks ("Invalid learning rate: -0.1"), and the scheduler's."""
    probe = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = instantiate(cfg.optimizer)([probe])
        if cfg.scheduler:
            instantiate(cfg.scheduler)(optimizer)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError("optimizer", str(error)) from error


#: The groups whose checks import Lightning (about 3 s) or depend on the machine's devices: a
#: sweep's dry run leaves them to the launch, and the optimizer's values too (building an
#: optimizer imports torch._dynamo: about 1.3 s).
LIGHTNING_GROUPS = ("trainer", "logger", "callbacks", "speed")


def check_options(cfg: DictConfig, complete: bool = True, budget: bool = False) -> Built:
    """Check the run config by type and range (``budget``: the budget too); return what the
    check built. The checks of seconds come last; ``complete=False`` skips them (a sweep runs
    them for the cells it launches: ``sdexp.sweep.plan.CellPlanner``)."""
    values = resolved(cfg)
    check_values(values, TopLevel, "", "the run config")
    if missing := [f.name for f in fields(TopLevel) if f.name not in values]:  # ~budget
        raise ConfigError(missing[0], f"missing: the run needs it; set it ({missing[0]}=...)")
    check_types(values, ("recipe", "run", "mode", "model", "dataset"))
    built = check_ranges(cfg, values)
    check_types(values, ("optimizer", "scheduler"))
    if budget:
        checked = built.mode.check(values["budget"], built.num_blocks)
        built = Checked(**vars(built), budget=checked)
    if complete:
        check_types(values, LIGHTNING_GROUPS)
        check_optimizer(cfg)
    return built


def check_config(cfg: DictConfig, complete: bool = True) -> Checked:
    """``check_options`` and the budget (``Mode.check``), once per run: the run reuses both."""
    return check_options(cfg, complete, budget=True)
