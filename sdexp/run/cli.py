"""``sdexp-train mode=sensemode budget=0.3`` (``python train.py ...`` in a checkout): train a
Stable ResNet with stochastic depth at a mode and budget. Whatever stops a run is one line and
an exit status: 2 for bad input, 1 for a failed run, 130 and 143 for SIGINT and SIGTERM."""

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
import yaml
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from sdexp.run import console
from sdexp.run.failures import (
    Stopped,
    exit_on_stop,
    failure_policy,
    flat_message,
    one_line,
    raise_if_stopped,
    stop_on_signals,
)
from sdexp.run.slurm import requeue_if_preempted

# What imports torch is imported where it is used, after the signal handlers are set.

log = logging.getLogger("sdexp")


def run_task(cfg: DictConfig, task: Callable[[DictConfig], object]) -> None:
    """``task(cfg)`` under the failure policy, SIGINT and SIGTERM raising ``Stopped``. A run
    that never owned its directory leaves nothing there. A run stopped by SIGTERM requeues a
    preempted SLURM job; a submitit job then ends with no result, so that the sweep waits."""
    try:
        with failure_policy(console.in_multirun()), stop_on_signals():
            try:
                task(cfg)
            finally:
                if not console.run_log_opened():
                    from sdexp.run.directory import remove_unused

                    remove_unused()
    except Stopped as stop:
        if stop.signum == signal.SIGTERM and (requeued := requeue_if_preempted()):
            log.warning(requeued)
        if "SUBMITIT_FOLDER" in os.environ:  # set by submitit in its jobs
            raise SystemExit(stop.exit_status) from None
        raise


def train_task(cfg: DictConfig) -> None:
    # Bad input fails within seconds, before Lightning is imported. A signal is deferred to the
    # end of the checks: imports interrupted part-way become other errors or are swallowed.
    with stop_on_signals(defer=True):
        from sdexp.run.config import check_config
        from sdexp.run.directory import check_kinds

        check_kinds(Path(cfg.output_dir))
        checked = check_config(cfg)
        from sdexp.run.training import train as run
    raise_if_stopped()
    run(cfg, checked)


def composition_error(error: BaseException) -> str:
    """One line for an error of composing the config (a missing option, bad YAML, Hydra's)."""
    cause = error
    while cause is not None and not isinstance(cause, yaml.MarkedYAMLError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and cause.problem_mark is not None:
        mark = cause.problem_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}"
        what = " ".join(filter(None, [cause.context, cause.problem]))
        return f"{where}: not valid YAML ({what})"
    if isinstance(error, MissingConfigException) and error.options and error.missing_cfg_file:
        group, name = error.missing_cfg_file.rsplit("/", 1)
        return (
            f"{group}={name}: no such option of {group} (its options: {', '.join(error.options)})"
        )
    return flat_message(error)


def hydra_errors_in_one_line(main: Callable[[], None]) -> Callable[[], None]:
    """``main`` (a ``@hydra.main`` function) with Hydra's own errors as one line: composing the
    config (exit status 2), anything else outside the task (1). Told ``HYDRA_FULL_ERROR=1``,
    Hydra raises them rather than printing a block; a user who sets it gets the full report."""

    @functools.wraps(main)
    def wrapped() -> None:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return main()
        before = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            main()
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
            print(f"error: {composition_error(error)}", file=sys.stderr)
            sys.exit(2)
        except Exception as error:  # noqa: BLE001 - the policy: one line, never a traceback
            print(f"error: {one_line(error)}", file=sys.stderr)
            sys.exit(1)
        finally:
            os.environ.pop("HYDRA_FULL_ERROR")
            if before is not None:
                os.environ["HYDRA_FULL_ERROR"] = before

    return wrapped


@hydra_errors_in_one_line
@hydra.main(config_path="pkg://sdexp.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_task(cfg, train_task)


def train() -> None:
    """The command (``sdexp-train``); a signal while Hydra composes the config is deferred."""
    with stop_on_signals(defer=True, restore=False):
        exit_on_stop(main)
