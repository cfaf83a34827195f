"""Config checks: every value a user can set is checked by type and range within seconds, before
data, model or Lightning load, and a bad one is a ``ConfigError`` naming the option.

The types are declared once, where the values are used: the signature of each ``_target_``
(the model, data module, mode, optimizer, scheduler, Lightning's ``Trainer``), the ``Recipe``
dataclass and ``TopLevel`` below. Hydra's structured configs would declare them a second time
and fail inside ``@hydra.main`` with a traceback-like message; this check reads the signatures
and fails with one line (``train.py``: exit status 2). Ranges are checked by the constructors
themselves (they raise ``ConfigError``), which the check calls on cheap objects.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import os
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, Union

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.overrides import TorchFunctionMode

from sdexp.errors import ConfigError
from sdexp.recipe import Recipe
from sdexp.sharing import check_threads
from sdexp.survival import check_budget

SEED_RANGE = (0, 2**32 - 1)  # what numpy (and so pl.seed_everything) accepts


@dataclass
class TopLevel:
    """The keys of ``conf/train.yaml`` that are not groups of their own."""

    budget: float
    seed: int
    overwrite: bool
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


# --- types --------------------------------------------------------------------------------------


def conforms(value: Any, annotation: Any) -> bool:
    """Whether a config value (after resolution: None, bool, int, float, str, list, dict) can
    be passed where ``annotation`` is declared; True where a YAML value cannot be judged."""
    if annotation in (Any, inspect.Parameter.empty):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if annotation is type(None) or annotation is None:
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    sequence = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
    if origin in sequence or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        item = args[0] if args and args[-1] is not Ellipsis or len(args) == 2 else Any
        return all(conforms(v, item) for v in value)
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        return isinstance(value, dict)
    if isinstance(value, dict) and "_target_" in value:
        return True  # a nested object, instantiated by Hydra
    return True  # a class (a device, a path object, a tensor...): not a YAML value's to judge


def describe(annotation: Any) -> str:
    """``annotation`` in words: "a number", "one of ['a', 'b']", "null or an integer"..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return f"one of {list(args)}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in names:
        return names[annotation]
    if annotation is type(None) or annotation is None:
        return "null"
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return f"a list of ({describe(args[0])})" if args else "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def signature_types(target: Any) -> tuple[dict[str, Any], bool]:
    """The declared type of each keyword of ``target`` (a class or function), and whether it
    takes ``**kwargs``. A type that cannot be evaluated counts as Any."""
    function = target.__init__ if inspect.isclass(target) else target
    parameters = inspect.signature(target).parameters
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - a forward reference the module cannot resolve
        hints = {}
    varkw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        name: hints.get(name, Any)
        for name, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    return named, varkw


def check_values(
    values: dict, types_: dict[str, Any], path: str, owner: str, open_: bool = False
) -> None:
    """Raise ConfigError for a key ``types_`` does not declare (unless ``open_``) or a value
    of the wrong type; ``path`` prefixes the option's name."""
    for key, value in values.items():
        if key.startswith("_") and key.endswith("_"):  # _target_, _partial_, _convert_...
            continue
        option = f"{path}.{key}" if path else key
        if key not in types_:
            if open_:
                continue
            known = ", ".join(k for k in types_ if not k.startswith("_"))
            raise ConfigError(option, f"not an option of {owner} (its options: {known})")
        if not conforms(value, types_[key]):
            raise ConfigError(option, f"{describe(types_[key])}, got {value!r}")


def locate(dotted: str) -> Any:
    """The object a ``_target_`` names, a class or a function. (Hydra's ``get_class`` and
    ``get_method`` each log an error for the other kind.)"""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            target = getattr(target, name)
        return target
    raise ImportError(dotted)


def check_target(node: dict, path: str) -> Any:
    """Check a ``_target_`` node's keys against its target's signature; return the target."""
    try:
        target = locate(node["_target_"])
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{path}._target_", f"cannot import {node['_target_']!r}") from error
    declared, varkw = signature_types(target)
    check_values(node, declared, path, node["_target_"], open_=varkw)
    return target


def dataclass_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in fields(schema)}


TOP_LEVEL = dataclass_types(TopLevel)


# --- the whole config ---------------------------------------------------------------------------


def resolved(cfg: DictConfig) -> dict:
    """The config as plain values; an interpolation that fails names its key. ``output_dir``
    (and what interpolates it) is taken as written: outside a running Hydra job (a sweep's
    planning, a test's compose) ``${hydra:runtime.output_dir}`` has no value yet."""
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


def check_types(values: dict, groups: tuple[str, ...]) -> None:
    """The keys of ``groups`` against their declared types."""
    for group in groups:
        if group == "recipe":
            check_values(values["recipe"], dataclass_types(Recipe), "recipe", "the recipe")
        elif group == "run":
            check_values(values["run"], dataclass_types(RunNames), "run", "run")
        elif group == "speed":
            from sdexp.module import Speed, check_speed  # imports Lightning: checked last

            check_values(values["speed"], dataclass_types(Speed), "speed", "speed")
            optimizer = locate(values["optimizer"]["_target_"])
            check_speed(values["speed"], values["trainer"], optimizer)
        elif group == "callbacks":
            for name, callback in values["callbacks"].items():
                check_target(callback, f"callbacks.{name}")
        elif values.get(group):
            check_target(values[group], group)


def check_seed(seed: int) -> None:
    lo, hi = SEED_RANGE
    if not lo <= seed <= hi:
        raise ConfigError("seed", f"an integer in [{lo}, {hi}], got {seed}")


class SkipInit(TorchFunctionMode):
    """``torch.nn.init``'s functions, and the in-place random fills they call (``normal_``,
    ``uniform_``: some of them do not dispatch here), return their tensor untouched. On the
    meta device those fills go through ``torch._refs``, whose first call imports
    ``torch._dynamo``: over a second of a sweep's dry run. (Lightning Fabric's ``_EmptyInit``
    is alike, but importing it imports Lightning, which this check avoids.)"""

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
    """How many devices (processes) Lightning would train on: ``devices`` is a number (-1: all),
    a list of indices, a string of them ("0,1") or "auto" (all GPUs, one CPU process)."""
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
    """What Lightning would refuse, or run into a crash, with a traceback: an accelerator this
    machine lacks, several devices without DDP that handles dropped blocks, no training batch."""
    accelerator = str(trainer.get("accelerator", "auto"))
    available = {
        "gpu": torch.cuda.is_available(),
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
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
    if limit is not None and not (
        isinstance(limit, int)
        and not isinstance(limit, bool)
        and limit >= 1
        or isinstance(limit, float)
        and 0 < limit <= 1
    ):
        raise ConfigError(
            "trainer.limit_train_batches",
            f"a number of batches (at least 1) or a fraction in (0, 1] of each epoch, or null "
            f"(all), got {limit!r}: a run must train",
        )


def check_ranges(cfg: DictConfig, values: dict):
    """Ranges the constructors do not check; returns the instantiated mode."""
    check_seed(values["seed"])
    check_threads(values["threads"])
    epochs = values["trainer"].get("max_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ConfigError("trainer.max_epochs", f"an integer, at least 1, got {epochs!r}")
    check_trainer(values["trainer"])
    check_budget(values["budget"])
    mode = instantiate(cfg.mode)
    datamodule = instantiate(cfg.dataset, seed=cfg.seed)  # reads no data
    with torch.device("meta"), SkipInit():  # the model's own checks, no weights allocated
        instantiate(
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
    return mode


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


#: The groups whose checks import Lightning (about 3 s: torchmetrics, then torchvision). A
#: sweep's dry run leaves them to the launch, and the optimizer's values too (building an
#: optimizer imports torch._dynamo: about 1.3 s).
LIGHTNING_GROUPS = ("trainer", "logger", "callbacks", "speed")


def checked_mode(cfg: DictConfig, complete: bool = True):
    """Check the run config by type and range, all but whether the mode can meet the budget;
    return the instantiated survival mode (a sweep leaves out the cells it cannot meet).

    Raises ``ConfigError`` for a value of the wrong type, a key an option does not have, a
    budget outside (0, 1], bad mode, data or optimizer options, a seed numpy would not take,
    fewer than one epoch. The checks that take seconds come last, so most bad values fail
    within a second; ``complete=False`` (a dry run) leaves them out: the optimizer's values
    and the options of ``LIGHTNING_GROUPS``.
    """
    values = resolved(cfg)
    check_values(values, TOP_LEVEL, "", "the run config")
    check_types(values, ("recipe", "run", "mode", "model", "dataset"))
    mode = check_ranges(cfg, values)
    check_types(values, ("optimizer", "scheduler"))
    if not complete:
        return mode
    check_types(values, LIGHTNING_GROUPS)
    check_optimizer(cfg)
    if cfg.logger and "mode" in cfg.logger:
        from sdexp.loggers import resolve_wandb_mode

        resolve_wandb_mode(cfg.logger.mode)
    return mode


def check_config(cfg: DictConfig):
    """``checked_mode``, and a ``ConfigError`` if the mode cannot meet the budget with the
    model's L blocks (linear below (L - 1)/(2L), SenseMode below its p_min)."""
    mode = checked_mode(cfg)
    mode.check(cfg.budget, get_class(cfg.model._target_).blocks_for(cfg.model.depth))
    return mode
