"""What the test modules share: the project's configs, commands as a user runs them, readers of
what runs write, fabricated results, and the command table of README and the manual. Test
modules import from here and from nowhere else in ``tests/`` (``conftest.py`` holds the
fixtures, ``callbacks.py`` the Lightning callbacks that runs load by name)."""

from __future__ import annotations

import http.server
import importlib.util
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from wandb_workspaces import expr

from sdexp.models import CifarResNet
from sdexp.recipe import StepGradients, start_momentum
from sdexp.results import (
    NOT_SETUP,
    LeftOutCell,
    Plan,
    PlannedCell,
    RunKey,
    RunResult,
    config_hash,
    read_result,
    without,
    write_plan,
    write_result,
)
from sdexp.tracking.report import runset_reads

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"  # the Hydra configs (the package sdexp.conf once installed)

# A toy run that takes a few seconds (conf/scale/tiny.yaml: the smoke sweep's runs too).
FAST_TOY = ["+scale=tiny"]

# --- Lightning in process (tests/integration) -----------------------------------------------------


def cpu_trainer(**options):
    """A Lightning Trainer on the CPU that prints nothing and keeps nothing: no logger, no
    checkpoints, no progress bar, no model summary, unless ``options`` say otherwise."""
    import pytorch_lightning as pl  # Lightning is for the layers that train

    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    return pl.Trainer(**{"accelerator": "cpu", "enable_model_summary": False, **quiet, **options})


# --- the project's configs ------------------------------------------------------------------------


@contextmanager
def hydra_configs() -> Iterator[None]:
    """The project's configs, loaded as Hydra loads them for ``train.py`` and the theory."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose_config(
    overrides: list[str], config_name: str = "train", hydra: bool = False
) -> DictConfig:
    """The composed config (with Hydra's own node when ``hydra``), as a job gets it."""
    with hydra_configs():
        return compose(config_name, overrides, return_hydra_config=hydra)


def compose_theory(experiment: str, output_dir: Path, *overrides: str) -> DictConfig:
    """The theory's config for ``experiment`` (``python -m sdexp.theory experiment=...``)."""
    overrides = [f"experiment={experiment}", f"output_dir={output_dir}", *overrides]
    return compose_config(overrides, config_name="theory")


def config_options(group: str) -> list[str]:
    """The options of a config group (``conf/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def local_cifar(root: Path) -> list[str]:
    """Overrides that read the fixture's CIFAR copy: no download, no official checksums."""
    return [f"dataset.data_dir={root}", "dataset.download=false", "dataset.verify_md5=false"]


# --- commands as a user runs them -----------------------------------------------------------------


def user_env(**changes: str | None) -> dict[str, str]:
    """The environment of a user's shell: this one, with W&B offline, without the wandb-core
    service this test process may have started (a child would share it), and with one OpenMP
    thread: the suite runs a pytest-xdist worker per core, and a process's second torch thread
    only waits for a core (docs/performance/README.md, "CPU threads"). ``changes``: more
    variables; None unsets one."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env |= {"WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"} | changes
    return {k: v for k, v in env.items() if v is not None}


def imported_packages(stderr: str) -> set[str]:
    """The top-level packages a process imported, read from its ``-X importtime`` lines (or
    ``PYTHONPROFILEIMPORTTIME=1``'s) on ``stderr``."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines}


def run_train(*overrides: str, cwd: Path = ROOT, timeout: float = 600, **env: str | None):
    """``python train.py OVERRIDES`` as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_env(**env),
    )


def run_table(*args: str) -> subprocess.CompletedProcess:
    """``sdexp-table ARGS`` as a user runs it (``python -m sdexp.analysis.cli``: this checkout's
    code)."""
    return subprocess.run(
        [sys.executable, "-m", "sdexp.analysis.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=user_env(),
    )


def wait_for(path: Path, process: subprocess.Popen, limit_s: float = 300) -> None:
    """Poll until ``path`` exists (the run paused); fail if the process ends first."""
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before pausing:\n{out[-3000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} never appeared")
        time.sleep(0.1)


@contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable, also for root (the immutable attribute), then restored."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("root without chattr: no way to make a folder unwritable")
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"chattr +i not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)


# The tiny run as ``finished_run`` (conftest) runs it: SenseMode at budget 0.3, W&B offline.
TINY_RUN = [*FAST_TOY, "mode=sensemode", "budget=0.3", "logger=wandb"]

# A tiny run that crashes at the start of epoch 1 (after epoch 0's checkpoint), at width 16: the
# ``crashed_run`` fixture's; the same command goes on (CrashOnce crashes once).
CRASHING = [*FAST_TOY, "logger=none", "model.width=16"]
CRASHING += ["+callbacks.crash._target_=tests.callbacks.CrashOnce", "+callbacks.crash.epoch=1"]

# The ``failed_sweep`` fixture's: two jobs whose loss diverges, in the smoke sweep's W&B group,
# a log line every step.
FAILING = ["+sweep=smoke", "mode=uniform,none", "budget=0.7", "seed=0", "optimizer.lr=1e4"]
FAILING += ["trainer.log_every_n_steps=1"]


def readme_env() -> dict[str, str]:
    """A user's shell that finds this checkout's code and console scripts, W&B offline."""
    bin_dir = str(Path(sys.executable).parent)  # python, sdexp-table, sdexp-dashboard
    return user_env(PYTHONPATH=str(ROOT), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def keep_output(folder: Path, done: subprocess.CompletedProcess) -> None:
    """A command's status and output, beside what it made (read back by ``command_output``)."""
    record = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
    (folder / "command.json").write_text(json.dumps(record))


def command_output(folder: Path) -> subprocess.CompletedProcess:
    """What ``keep_output`` kept: the status and output of the command that made ``folder``."""
    record = json.loads((folder / "command.json").read_text())
    return subprocess.CompletedProcess("", record["returncode"], record["stdout"], record["stderr"])


def copy_of(folder: Path, into: Path) -> Path:
    """A copy of a session fixture's folder that a test may change (symlinks kept as links)."""
    return Path(shutil.copytree(folder, into, symlinks=True))


def load_script(name: str):
    """``scripts/<name>.py`` imported as the module ``<name>`` (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# --- W&B servers that are down, silent or failing -------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a W&B server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SilentServer:
    """A socket on 127.0.0.1 that accepts every connection and never answers (a stuck proxy or
    load balancer in front of W&B); ``accepted`` holds the time of each connection."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.accepted: list[float] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.accepted.append(time.time())
            self.held.append(connection)  # open, unanswered

    def close(self) -> None:
        for connection in [*self.held, self.socket]:
            connection.close()


def http_server(get: int, post: int) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 that answers GET with status ``get`` and POST (wandb's
    GraphQL calls) with ``post``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_error(get)

        def do_POST(self):  # noqa: N802
            self.send_error(post)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def half_answering_server() -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 that answers GET (a proxy's health page) and never answers
    POST, where wandb sends its GraphQL calls."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_error(200)

        def do_POST(self):  # noqa: N802
            time.sleep(600)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


#: What ``accepting_server`` answers wandb's first GraphQL calls with: a run that exists.
UPSERT_BUCKET = {
    "upsertBucket": {
        "inserted": True,
        "bucket": {
            "id": "UnVuOnYxOmFiYzpwOmU=",
            "name": "abc",
            "displayName": "abc",
            "description": "",
            "config": "{}",
            "sweepName": None,
            "historyLineCount": 0,
            "project": {"id": "p", "name": "sdexp", "entity": {"id": "e", "name": "me"}},
        },
    }
}


def accepting_server(accepted: int = 4) -> http.server.ThreadingHTTPServer:
    """A W&B server on 127.0.0.1 that accepts the run (its first ``accepted`` POSTs: the probe,
    the resume check, the run's creation) and then fails every call with HTTP 500."""
    posts = itertools.count(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            query = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if next(posts) > accepted:
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = UPSERT_BUCKET if b"upsertBucket" in query else {}
            body = json.dumps({"data": data}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- what runs and sweeps write -------------------------------------------------------------------

# timings, and the share of the device: how many runs of a sweep ran beside it
VOLATILE = {"train_time_s", "epoch_times_s", "device_share"}


def stable_fields(result: RunResult) -> dict:
    """What two runs of the same computation agree on (not their timings)."""
    return {k: v for k, v in result.to_dict().items() if k not in VOLATILE}


def same_numbers(a: RunResult, b: RunResult) -> bool:
    """Two runs computed the same numbers (a may carry a test callback that b lacks)."""
    ignore = {"identity", "setup", "config"}
    return {k: v for k, v in stable_fields(a).items() if k not in ignore} == {
        k: v for k, v in stable_fields(b).items() if k not in ignore
    }


def results_in(sweep_dir: Path) -> dict[str, RunResult]:
    """Every results.json under ``sweep_dir``, by its directory relative to ``sweep_dir``."""
    return {
        str(p.parent.relative_to(sweep_dir)): read_result(p.parent)
        for p in sweep_dir.rglob("results.json")
    }


def grid_lines(stdout: str) -> tuple[list[str], list[str]]:
    """The planned runs and the left-out cells of a dry listing."""
    runs = [line for line in stdout.splitlines() if re.match(r"\s*\d+\s+(to run|done)\s", line)]
    left_out = [line for line in stdout.splitlines() if re.match(r"\s+-\s+left out", line)]
    return runs, left_out


def wandb_record(wandb_run: Path, *flags: str) -> dict:
    """A W&B run's state, config and summary, read back from its files by wandb itself."""
    done = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", *flags, str(wandb_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def history_steps(wandb_run: Path) -> list[int]:
    """The trainer steps of a W&B run's history rows, from its .wandb file."""
    done = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(wandb_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    steps = []
    for line in done.stdout.splitlines():
        record = json.loads(line)
        if record.get("type") == "history" and "trainer/global_step" in record["history"]["item"]:
            steps.append(int(record["history"]["item"]["trainer/global_step"]))
    return steps


def table_rows(markdown: str) -> list[list[str]]:
    """The rows of every pipe table in ``markdown`` (``DataFrame.to_markdown`` pads its cells),
    each as its stripped cells; header rows in, rule rows out."""
    rows = []
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(c and set(c) <= set(":-") for c in cells):
                rows.append(cells)
    return rows


def table_row(markdown: str, *first: str) -> list[str]:
    """The first row of a table in ``markdown`` whose cells begin with ``first``."""
    return next(row for row in table_rows(markdown) if row[: len(first)] == list(first))


# --- fabricated results: Table 2 of the paper -----------------------------------------------------

BUDGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# Table 2 of the paper (CIFAR-10, Stable ResNet110, test error %): mean, std over 4 runs
PAPER = {
    "sensemode": (
        [15.4, 9.3, 7.0, 7.3, 7.3, 6.9, 7.3, 6.6, 6.2],
        [0.4, 0.5, 0.3, 0.4, 0.2, 0.1, 0.3, 0.2, 0.2],
    ),
    "uniform": (
        [17.2, 10.3, 7.7, 7.4, 6.8, 6.3, 5.9, 5.7, 5.7],
        [0.3, 0.4, 0.2, 0.3, 0.1, 0.2, 0.1, 0.1, 0.1],
    ),
    "linear": ([None] * 4 + [9.1, 7.5, 6.4, 6.1, 6.0], [None] * 4 + [0.1, 0.2, 0.2, 0.2, 0.2]),
}
MODES = ("sensemode", "uniform", "linear")
OFFSETS = (-0.3, -0.1, 0.1, 0.3)  # per seed: mean = the paper's value, sample std = 0.258
SHIFT = {"uniform": 1}  # uniform's seed s gets OFFSETS[s + 1]: paired differences vary by seed


# A multirun's config as Hydra's callbacks get it (``sdexp.run.sharing.MPSDaemon``).
SWEEP = OmegaConf.create({"hydra": {"sweeper": {"max_batch_size": None}}})


def fake_run(
    root: Path,
    mode: str,
    budget: float,
    seed: int,
    value: float | None,
    status: str = "ok",
    dataset: str = "cifar10",
    model: str = "resnet110",
    lr: float = 0.1,
    write: bool = True,
) -> PlannedCell:
    """A results.json as a run of this setup writes it (its identity config reduced to what
    matters here); returns its cell of the sweep's plan (sweep.json)."""
    config = {
        "dataset": {"name": dataset},
        "model": {"name": model},
        "optimizer": {"lr": lr},
        "mode": {"_target_": f"sdexp.survival.{mode}"},
        "budget": budget,
        "seed": seed,
    }
    key = RunKey(
        dataset=dataset,
        model=model,
        mode=mode,
        budget=budget,
        seed=seed,
        recipe="reference",
        epochs=164,
        stable=True,
        num_blocks=54 if model == "resnet110" else 8,
        identity=config_hash(config),
        setup=config_hash(without(config, NOT_SETUP)),
    )
    metric = "mse" if dataset == "toy" else "error"
    result = RunResult(key, config, status, metric=metric, report="final", test_final=value)
    if value is not None:
        result.test_loss, result.expected_depth = value / 100, budget * key.num_blocks
    if status == "failed":
        result.reason = "NonFiniteLossError: training loss is nan"
    run_dir = f"budget={budget},mode={mode},seed={seed}"
    if write:
        write_result(root / run_dir, result)
    overrides = [f"mode={mode}", f"budget={budget}", f"seed={seed}"]
    return PlannedCell(key, run_dir, overrides, config["mode"], metric, "final")


def fake_table2_sweep(root: Path) -> None:
    """A finished Table 2 sweep whose means are the paper's, but for one failed and one missing
    run (sensemode at 0.2, seeds 3 and 2) and linear's infeasible budgets left out."""
    cells, left_out = [], []
    for mode in MODES:
        for i, budget in enumerate(BUDGETS):
            if PAPER[mode][0][i] is None:  # linear below (L-1)/(2L): the sweeper leaves it out
                cell = fake_run(root, mode, budget, 0, None, write=False)
                left_out.append(
                    LeftOutCell(cell.overrides, "infeasible", cell.key.setup, mode, budget)
                )
                continue
            for seed in range(len(OFFSETS)):
                if (mode, budget, seed) == ("sensemode", 0.2, 2):  # planned, never started
                    cells.append(fake_run(root, mode, budget, seed, None, write=False))
                    continue
                status = "failed" if (mode, budget, seed) == ("sensemode", 0.2, 3) else "ok"
                offset = OFFSETS[(seed + SHIFT.get(mode, 0)) % 4]
                value = PAPER[mode][0][i] + offset if status == "ok" else None
                cells.append(fake_run(root, mode, budget, seed, value, status))
    for seed, offset in enumerate(OFFSETS):
        cells.append(fake_run(root, "none", 1.0, seed, 6.37 + offset))
    write_plan(root, Plan(cells, left_out))


def fabricate(root, seed: int, status="ok", hours=1.0, device="NVIDIA H200", share=1.0, lr=0.1):
    """A run's results.json: ``hours`` of training time on ``device``, holding ``share`` of it."""
    config = {"optimizer": {"lr": lr}, "mode": "uniform", "budget": 0.5, "seed": seed}
    key = RunKey(
        dataset="cifar10",
        model="resnet110",
        mode="uniform",
        budget=0.5,
        seed=seed,
        recipe="reference",
        epochs=164,
        stable=True,
        num_blocks=54,
        identity=config_hash(config),
        setup=config_hash(without(config, NOT_SETUP)),
    )
    result = RunResult(key, config, status, test_final=7.0, train_time_s=3600 * hours)
    result.device, result.device_share = device, share
    write_result(root / f"lr={lr},seed={seed}", result)


def fake_cost_sweep(root: Path) -> None:
    """Eight runs that shared an H200 (an eighth each), one of them failed after half its time;
    another setup's two runs on an A100, one of an earlier version that recorded no device."""
    for seed in range(7):
        fabricate(root, seed, hours=2.0, share=1 / 8)
    fabricate(root, 7, status="failed", hours=1.0, share=1 / 8)
    fabricate(root, 0, hours=1.5, device="NVIDIA A100", lr=0.05)
    fabricate(root, 1, hours=0.5, device=None, lr=0.05)
    data = json.loads((root / "lr=0.05,seed=1" / "results.json").read_text())
    del data["device"], data["device_share"]  # as written before these fields existed
    (root / "lr=0.05,seed=1" / "results.json").write_text(json.dumps(data))


def cifar_resnet14(seed: int = 0) -> CifarResNet:
    """A CIFAR ResNet14 (6 blocks) at survival 0.5, its weights and masks from ``seed``."""
    torch.manual_seed(seed)
    model = CifarResNet(depth=14, num_outputs=10, mask_seed=seed)
    model.gate.set_survival([0.5] * model.num_blocks)
    return model


# --- one training step, eager or graphed (speed.cuda_graphs) --------------------------------------


def state(model, optimizer) -> dict[str, torch.Tensor]:
    """Every number a step changes: parameters, buffers, momentum buffers."""
    found = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    for name, p in model.named_parameters():
        buffer = optimizer.state.get(p, {}).get("momentum_buffer")
        if buffer is not None:
            found[f"momentum.{name}"] = buffer.clone()
    return found


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"not bit-identical: {different[:5]}"


def sgd(model, **kwargs):
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4, **kwargs
    )
    start_momentum(optimizer)  # for fused: a no-op otherwise
    return optimizer


def train_step(loss_of, model, optimizer, x, y, dropped_blocks) -> torch.Tensor:
    """What Lightning's automatic optimisation does: forward, clear gradients, backward, step."""
    loss = loss_of(x, y)
    StepGradients(model, dropped_blocks).clear()
    loss.backward()
    optimizer.step()
    return loss.detach()


# --- The commands of README and the manual ------------------------------------------------------
# ``CHECKS`` lists each command of the bash code blocks of README.md and of every page of the
# manual (docs/**/*.md), as the page writes it (continuation lines joined, a trailing comment left
# out; a command on several pages is listed once), with how the tests check it:
#
# - ``RUN``: run exactly as written by bash, README's first and then the pages' in the order of
#   ``DOC_PAGES``, in a fresh directory that holds this checkout's ``train.py`` and ``scripts/``
#   (outputs land there, nothing in the checkout): tests/e2e/test_readme.py; ``SMOKE_COMMAND``
#   is the ``smoke_sweep`` fixture's, run first;
# - ``COMPOSE``: too long for a CPU test or needs a GPU, CIFAR or a cluster: its configuration is
#   composed by Hydra, as the command would (an override naming no key or option fails):
#   tests/unit/test_readme.py;
# - any other value: the reason it is not run (and the test that covers it, where one does).
#
# The pages change in parallel with the code: a command that is not in ``CHECKS``, or an entry
# of ``CHECKS`` that no page has any more, fails tests/unit/test_readme.py, which prints the
# commands to add with their pages. Decide for each and update the table.

RUN, COMPOSE = "run", "compose"
SMOKE_COMMAND = "python train.py +sweep=smoke"  # the first RUN command: the smoke_sweep fixture's
GPU = "trains on CIFAR for hours: needs a GPU and the data"
CHECKS = {
    'python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[dev]" '
    "&& python train.py dataset=toy model=vanilla mode=sensemode budget=0.3": "creates a virtual "
    "environment and installs the package (network, minutes; tests/e2e/test_installed.py builds "
    "and installs the wheel); its training command is tests/e2e/test_console.py's first test",
    ". .venv/bin/activate && pytest": "the whole test suite (docs/development.md: its layers)",
    "python train.py mode=sensemode budget=0.3": COMPOSE,
    "python train.py dataset=cifar100 model=resnet56 mode=linear budget=0.7 seed=1": COMPOSE,
    "wandb sync outputs/runs/*/*/wandb/offline-run-*": "uploads to a W&B server",
    "wandb sync outputs/sweeps/table2_cifar10/*/*/wandb/offline-run-*": "uploads to a W&B server",
    "sdexp-dashboard --entity ENTITY --project sdexp --group table2_cifar10": "saves a report on "
    "a W&B server (tests/e2e/test_dashboard.py: without one it fails in one line)",
    "python train.py +sweep=smoke": RUN,
    "sdexp-dashboard --entity ENTITY --project sdexp --group smoke --metric mse --dry-run "
    "spec.json": RUN,
    "python train.py +sweep=table2_cifar10 hydra.sweeper.dry_run=true": RUN,
    "python train.py +sweep=table2_cifar10": COMPOSE,
    "python train.py +sweep=table2_cifar10 hydra/launcher=joblib hydra.launcher.n_jobs=4": COMPOSE,
    "python train.py +sweep=table2_cifar10 hydra/launcher=slurm hydra.launcher.partition=gpu "
    "hydra.launcher.timeout_min=600": COMPOSE,
    "python train.py trainer=ddp trainer.devices=2 dataset.batch_size=32 mode=sensemode "
    "budget=0.3": COMPOSE,
    "python train.py +sweep=table2_cifar10 trainer=ddp dataset.batch_size=16 "
    "hydra/launcher=slurm_ddp": COMPOSE,
    "sdexp-table outputs/sweeps/table2_cifar10": "reads the results of the CIFAR sweep",
    "sdexp-table outputs/sweeps/table2_* --out outputs/tables": "reads the results of the CIFAR "
    "sweeps",
    "sdexp-dashboard --project sdexp --group table2_cifar10 --tables outputs/tables": "reads "
    "the tables of the CIFAR sweeps (tests/e2e/test_table.py logs a fabricated sweep's tables)",
    "python train.py +sweep=smoke && sdexp-table outputs/sweeps/smoke": RUN,
    "time python train.py +sweep=budget_cpu": COMPOSE,  # 11 minutes; tests/e2e/test_regenerate.py
    "sdexp-table outputs/sweeps/budget_cpu --out docs/budget_cpu": "reads the results of the "
    "budget_cpu sweep (11 minutes) and writes into the checkout's docs/",
    "python train.py +sweep=table2_cifar10 hydra/launcher=gpu_shared speed.cuda_graphs=true "
    "speed.fused_optimizer=true": COMPOSE,
    "sdexp-table outputs/sweeps/budget_cpu --small 0.2 --large 0.8": "reads the results of the "
    "budget_cpu sweep (tests/unit/test_table.py runs --small and --large on fabricated runs)",
    "time python train.py +sweep=hypothesis_cpu": COMPOSE,  # an hour; tests/e2e/test_regenerate.py
    "sdexp-table outputs/sweeps/hypothesis_cpu --out docs/hypothesis_cpu --small 0.2 "
    "--large 0.8": "reads the results of the hypothesis_cpu sweep and writes into the checkout's "
    "docs/",
    "sdexp-table docs/hypothesis_cpu/runs.csv --out docs/hypothesis_cpu --small 0.2 --large 0.8": (
        "rewrites the checkout's docs/hypothesis_cpu from its committed runs.csv "
        "(tests/e2e/test_regenerate.py runs each folder's command into a temporary folder)"
    ),
    "python train.py +sweep=hypothesis_cpu_replication": COMPOSE,  # 80 runs, about 1.5 hours
    "sdexp-table outputs/sweeps/hypothesis_cpu_replication --out docs/hypothesis_cpu_replication "
    "--pool": "reads the results of the replication (80 runs, not run yet) and writes into the "
    "checkout's docs/ (tests/unit/test_images.py runs --pool on fabricated runs)",
    "python scripts/sensitivity_noise.py --fit docs/sensitivity_noise/noise.csv --epoch-batches 8 "
    "--out docs/sensitivity_noise": "rewrites the checkout's docs/sensitivity_noise/exponents.md "
    "(tests/e2e/test_regenerate.py runs it into a temporary folder)",
    "python scripts/sensitivity_noise.py dataset=digits model=resnet56 --seeds 0-9 --batches 1 2 "
    "4 8 16 32 64 128 --out docs/sensitivity_noise": "2 minutes, writes into the checkout's docs/ "
    "(tests/e2e/test_scripts.py runs it at a smaller size)",
    "python scripts/bench.py": "15 minutes (tests/integration/test_speed.py runs its --quick "
    "variant)",
    "pytest tests/unit": "a layer of the tests themselves (CI's `pytest` runs every layer)",
    "pytest tests/integration": "a layer of the tests themselves (CI's `pytest` runs it)",
    "pytest tests/e2e": "a layer of the tests themselves (CI's `pytest` runs it)",
    "pytest tests/cluster": "a layer of the tests themselves (CI's `pytest` runs it, with the "
    "cluster scripts/slurm_cluster.sh starts)",
    "pytest -m gpu": "needs a CUDA GPU (on a CPU its tests are skipped)",
    "python -m sdexp.theory experiment=depth": RUN,
    "python -m sdexp.theory experiment=gradient": COMPOSE,  # about 2 minutes each
    "python -m sdexp.theory experiment=regularizer": COMPOSE,
    "python -m sdexp.theory experiment=normality": COMPOSE,
    "python train.py +sweep=table2_cifar10 hydra/launcher=slurm hydra.launcher.partition=gpu": (
        COMPOSE
    ),
    "python train.py +sweep=smoke hydra/launcher=slurm_cpu": COMPOSE,  # tests/cluster runs it
    "sdexp-dashboard --entity ENTITY --project sdexp --group table2_cifar10 --dry-run spec.json "
    "&& python scripts/report_outline.py spec.json": RUN,  # tests/unit/test_docs.py: its output
    "python train.py +scale=tiny mode=sensemode budget=0.3": RUN,
    "mkdocs serve": "serves the manual until stopped (CI builds it, mkdocs build --strict in "
    ".ci/run; tests/e2e/test_docs.py builds it into a temporary folder)",
    "python scripts/config_reference.py > docs/configuration.md": "rewrites the checkout's "
    "docs/configuration.md (tests/unit/test_docs.py compares the page with what it writes)",
    'python -c "import numpy as np, pandas as pd; from scipy import stats; r = '
    "pd.read_csv('docs/hypothesis_cpu/runs.csv'); w = r[r.budget == 0.8].pivot(index='seed', "
    "columns='mode', values='test'); sd = (w.sensemode - w.uniform).std(); n = 40; t = "
    "stats.t.ppf(0.95, n - 1); q = np.sqrt(n) / sd; print(round(sd, 3), round(stats.nct.sf(t, n "
    "- 1, 0.143 * q), 2), round(stats.nct.cdf(-t, n - 1, (0.143 - 0.3) * q), 2), "
    'round(stats.nct.sf(t, n - 1, (0.6 - 0.3) * q), 2))"': "reads the checkout's "
    "docs/hypothesis_cpu/runs.csv (tests/e2e/test_docs.py runs it there and compares what it "
    "prints with what PLAN.md says it prints)",
    "sdexp-table outputs/sweeps/hypothesis_cpu_replication docs/hypothesis_cpu/runs.csv --out "
    "docs/hypothesis_cpu_replication/with_original --small 0.2 --large 0.8 --pool": "reads the "
    "results of the replication (not run yet) and writes into the checkout's docs/ "
    "(tests/unit/test_images.py runs --pool on fabricated runs)",
}


def bash_commands(markdown: str) -> list[str]:
    """The commands of the bash code blocks of ``markdown`` (at any indentation: a block inside a
    list too), in order: one per line once continuation lines are joined, a trailing comment left
    out, spaces collapsed."""
    commands = []
    for _, block in re.findall(r"^( *)```bash\n(.*?)^\1```", markdown, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(re.sub(r"(^|\s)#.*$", "", line).split())
            if command:
                commands.append(command)
    return commands


#: README, then every page of the manual, by path: the pages whose commands ``CHECKS`` lists.
DOC_PAGES = ["README.md"] + sorted(
    p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*.md")
)
PAGE_COMMANDS = {page: bash_commands((ROOT / page).read_text()) for page in DOC_PAGES}
COMMANDS = PAGE_COMMANDS["README.md"]  # README's, in its order (CI runs its first two)
#: Every page's commands, each once, in the order of ``DOC_PAGES`` (README's first).
ALL_COMMANDS = list(dict.fromkeys(c for page in DOC_PAGES for c in PAGE_COMMANDS[page]))


# --- W&B runs read back from their files (wandb's reader), and the runs a report's run set keeps


def value(run: dict, key: expr.Key):
    """A run's value for a filter key (``read_run``'s sections; config keys are dotted paths
    into the nested config)."""
    if key.section == "config":
        found = run["config"]
        for part in key.name.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        return found
    return run.get(key.section, {}).get(key.name)


def selects(filters: expr.Filters, run: dict) -> bool:
    """Whether a run set's filter tree (as wandb-workspaces parses it) keeps ``run``: the
    operators the report's run sets use (``build_report``)."""
    if filters.key is None:
        kept = [selects(child, run) for child in filters.filters or []]
        return all(kept) if filters.op == "AND" else any(kept)
    found = value(run, filters.key)
    tests = {
        "=": lambda: found == filters.value,
        "!=": lambda: found != filters.value,
        "IN": lambda: found in filters.value,
        "NIN": lambda: found not in filters.value,
    }
    return tests[filters.op]()


def unresolved(spec: dict, runs: list[dict]) -> dict[str, list[str]]:
    """Per run set of ``spec``, the keys it reads that none of the runs it selects logged
    (``runs`` as from :func:`read_run`); W&B's own run attributes (``run:...``) always resolve.
    A run set is checked against its own runs: the failed runs' ``reason`` is not a key of
    finished runs, nor the finished runs' curves one of failed runs. A run set that selects
    none of ``runs`` is not in the answer (:func:`unchecked`)."""
    missing = {}
    for name, keys in runset_reads(spec).items():
        logged = set().union(*(run["keys"] for run in selected(spec, name, runs)))
        gaps = sorted(k for k in keys if not k.startswith("run:") and k not in logged)
        if logged and gaps:
            missing[name] = gaps
    return missing


def unchecked(spec: dict, runs: list[dict]) -> list[str]:
    """The run sets of ``spec`` that select none of ``runs`` (the failed runs of a sweep where
    none failed): what they read cannot be checked against these runs."""
    return [r["name"] for r in spec["runsets"] if not selected(spec, r["name"], runs)]


def selected(spec: dict, name: str, runs: list[dict]) -> list[dict]:
    """The runs that the run set ``name`` of ``spec`` keeps."""
    [runset] = [r for r in spec["runsets"] if r["name"] == name]
    tree = expr.expr_to_filters(runset["filters"])
    return [run for run in runs if selects(tree, run)]


def run_directories(root: str | Path) -> list[Path]:
    """The W&B run directories (``offline-run-*``, ``run-*``) under ``root``."""
    found = Path(root).rglob("*run-*")
    return sorted(p for p in found if p.is_dir() and any(p.glob("*.wandb")))


def inspect(run_dir: Path, *flags: str) -> str:
    """``wandb leet inspect FLAGS RUN_DIR``: wandb's documented reader of a run's ``.wandb`` log."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(run_dir)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def flatten(config: dict, prefix: str = "") -> Iterable[str]:
    """Nested config keys joined with dots: ``{"key": {"mode": ...}}`` gives ``key.mode``."""
    for name, value in config.items():
        if isinstance(value, dict) and value:
            yield from flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def read_run(run_dir: Path) -> dict:
    """What a report sees of one W&B run, read from its files: its attributes (``run``: group
    and state), ``summary`` and ``config`` (as run set filters read them), and ``keys``, every
    key it logged as ``section:name``: config (flattened with dots), summary, history and the
    columns of the tables in the summary (``table:KEY#COLUMN``).

    ``wandb leet inspect --summary --json`` gives the state, config and summary but not which
    keys were history rows; ``wandb leet inspect --json`` prints every record of the log (the
    run record with its group, history rows), with nested values flattened with dots (a
    table's ``key._type``): such a key is read as its longest dotted prefix in the summary.
    """
    state = json.loads(inspect(run_dir, "--summary", "--json"))
    config = {k: v for k, v in state["config"].items() if k != "_wandb"}
    summary = {k: v for k, v in state["summary"].items() if not k.startswith("_")}
    keys = {f"config:{k}" for k in flatten(config)} | {f"summary:{k}" for k in summary}
    for name, value in summary.items():
        if isinstance(value, dict) and value.get("_type") == "table-file":
            table = json.loads((run_dir / "files" / value["path"]).read_text())
            keys |= {f"table:{name}#{column}" for column in table["columns"]}
    group = None
    for line in inspect(run_dir, "--json").splitlines():
        record = json.loads(line)
        if record.get("type") == "run":
            group = record["run"].get("run_group")
        if record.get("type") == "history":
            keys |= {f"history:{history_key(k, summary)}" for k in record["history"]["item"]}
    return {
        "run": {"group": group, "state": state["state"]},
        "summary": summary,
        "config": config,
        "keys": {k for k in keys if not k.split(":", 1)[1].startswith("_")},
    }


def history_key(flat: str, summary: dict) -> str:
    """The logged key behind a flattened history key: its longest dotted prefix in the summary."""
    parts = flat.split(".")
    prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
    return next((p for p in prefixes if p in summary), flat)
