"""W&B never prompts and never stops a run, as a user runs it: a server that is down, silent or
failing, a failed run, a run id held by a shared service (a resumed run's W&B history:
tests/e2e/test_rundir.py and tests/e2e/test_faults.py; jobs in one process:
tests/integration/test_training.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from sdexp.results import read_result
from sdexp.tracking import wandb_access
from tests.helpers import (
    FAST_TOY,
    ROOT,
    accepting_server,
    closed_port,
    half_answering_server,
    http_server,
    user_env,
    wandb_record,
)


@pytest.fixture
def failing_server():
    """Answers the probe (404, as a server that has no such page) and fails every GraphQL call
    with 500: it answers, but no W&B run can start there."""
    server = http_server(get=404, post=500)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def online_run(tmp_path: Path, base_url: str, *extra: str):
    """A toy run with W&B credentials (logger.mode=auto: online) and the server at base_url."""
    env = {k: v for k, v in user_env().items() if k != "WANDB_MODE"}
    env |= {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": base_url, "HOME": str(tmp_path)}
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *FAST_TOY, "logger=wandb"]
    command += [f"hydra.run.dir={run_dir}", *extra]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, run_dir


def log_time(line: str) -> float:
    """When a ``train.log`` line was written (``[2026-01-02 10:11:12,345][...``), as time.time()."""
    return datetime.strptime(line[1 : line.index("]")], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.slow
def test_a_dead_server_does_not_stop_the_run(tmp_path):
    """Credentials present, nothing listening at the server's address: the real wandb client
    logs offline and the run finishes (it once crashed after ~110 s with "run ID is in use")."""
    done, run_dir = online_run(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unreachable (could not be reached" in done.stderr  # a warning: on stderr
    assert read_result(run_dir).status == "ok"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert wandb_record(offline)["state"] == "finished"


@pytest.mark.slow
def test_a_server_that_never_answers_costs_seconds(tmp_path, silent_server):
    """Credentials present, and a server that accepts connections and never answers: the run
    once waited 2 min 01 s for wandb (its init timeout, then its telemetry at exit). The probe
    gives up after 5 s, the run logs offline, and nothing else of W&B asks that server."""
    done, run_dir = online_run(tmp_path, silent_server.url)
    assert done.returncode == 0, done.stderr[-3000:]
    port = silent_server.url.rsplit(":", 1)[1]
    warning = f"warning: W&B server 127.0.0.1:{port} unreachable (did not answer within 5 s)"
    assert done.stderr.splitlines() == [f"{warning}: logging offline"]  # and nothing else
    assert read_result(run_dir).status == "ok"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    record = wandb_record(offline)
    assert record["state"] == "finished" and record["summary"]["status"] == "ok"
    # One connection, the probe's: no wandb request waits on the server, at start or exit.
    [probe] = silent_server.accepted
    # The W&B start, from the probe to the run's first line (the Trainer is built after the
    # logger): a bound far under the 2 minutes it took, not a timing.
    lines = (run_dir / "train.log").read_text().splitlines()
    start = next(line for line in lines if "][sdexp][INFO] - Training toy" in line)
    assert log_time(start) - probe < 60


@pytest.mark.slow
def test_a_failing_server_does_not_stop_the_run(tmp_path, failing_server):
    """It answers, with server errors only: no W&B run can start there, and the run goes on
    offline under the same W&B id, without waiting for wandb's init timeout."""
    done, run_dir = online_run(tmp_path, failing_server, "logger.settings.init_timeout=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unreachable (answered HTTP 500): logging offline" in done.stderr  # a warning
    assert read_result(run_dir).status == "ok"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    record = wandb_record(offline)
    assert record["state"] == "finished" and record["summary"]["status"] == "ok"


@pytest.mark.slow
def test_a_failed_run_ends_its_wandb_run_as_failed(failed_sweep):
    """A diverging loss (the session's ``failed_sweep``, its Uniform job): the W&B run ends with
    a non-zero exit code and says why in its summary."""
    (run_dir,) = failed_sweep.glob("*/uniform-*")
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    record = wandb_record(wandb_run)
    assert record["exit_code"] != 0
    summary = record["summary"]
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["reason"]
    assert (summary["mode"], summary["dataset"], summary["model"]) == ("uniform", "toy", "vanilla")


@pytest.mark.slow
def test_a_run_id_held_by_a_shared_service_does_not_stop_the_run(tmp_path):
    """A wandb-core service shared with a parent process (inherited through WANDB_SERVICE)
    that still holds the run's id, as after a killed job: the run starts a service of its own."""
    import wandb

    holder = wandb.init(mode="offline", id="heldrunid0000001", dir=str(tmp_path), project="p")
    try:
        run_dir = tmp_path / "run"
        env = user_env(WANDB_SERVICE=os.environ["WANDB_SERVICE"])
        command = [sys.executable, str(ROOT / "train.py"), *FAST_TOY, "logger=wandb"]
        command += ["run.id=heldrunid0000001", f"hydra.run.dir={run_dir}"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "is in use" in done.stdout + done.stderr  # the first attempt, reported
        assert "logs nothing to W&B" not in done.stdout + done.stderr
        assert read_result(run_dir).status == "ok"
        offline = (run_dir / "wandb").glob("offline-run-*")  # the second attempt's, among them
        assert any(wandb_access.offline_summary(run).get("status") == "ok" for run in offline)
    finally:
        holder.finish()


@pytest.mark.slow
def test_a_server_that_answers_only_get_costs_seconds(tmp_path):
    """A server (a proxy) that answers GET and never POST, where wandb sends its calls: the
    probe asks as wandb does, gives up after 5 s, and the run logs offline. It once passed
    the probe and cost every run of a sweep ~37 s."""
    server = half_answering_server()
    try:
        done, run_dir = online_run(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stderr.splitlines()
    assert line.endswith("unreachable (did not answer within 5 s): logging offline"), line
    assert read_result(run_dir).status == "ok"
    lines = (run_dir / "train.log").read_text().splitlines()
    start = next(line for line in lines if "][sdexp][INFO] - Training toy" in line)
    end = next(line for line in lines if "][sdexp][INFO] - ok: " in line)
    assert log_time(end) - log_time(start) < 30  # a bound far above, not a timing


@pytest.mark.slow
def test_a_server_that_fails_after_accepting_the_run_is_a_warning(tmp_path):
    """The server creates the run, then fails every call (HTTP 500): what the run gives W&B
    after its start (the config, the layers' profile, metrics, the result, the final upload)
    is guarded and bounded (``finish_timeout``); the run is ok, its status its training's, and
    wandb's own output (its service's errors) goes to wandb/service.log, not the console."""
    server = accepting_server()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done, run_dir = online_run(tmp_path, url, "logger.settings.finish_timeout=5")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_result(run_dir).status == "ok"
    assert "Traceback" not in done.stderr and "panic" not in done.stderr
    assert all(line.startswith("warning: W&B ") for line in done.stderr.splitlines()), done.stderr
    assert "W&B failed to " in done.stderr and "the run goes on without W&B" in done.stderr
    last = done.stdout.splitlines()[-2:]
    assert last[0] == f"W&B: {url}/me/sdexp/runs/abc (incomplete: W&B was lost mid-run)", last
    assert last[1].startswith("ok: test MSE ")
    assert (run_dir / "wandb" / "service.log").exists()


@pytest.mark.slow
def test_a_run_whose_wandb_service_is_killed_goes_on(tmp_path):
    """SLURM signals every process of a job, wandb's service too: a service gone mid-run is
    a warning, and the run ends ok with its results (it once failed with ConnectionResetError)."""
    kill = ["+callbacks.kill._target_=tests.callbacks.KillWandbService", "trainer.max_epochs=3"]
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *FAST_TOY,
            "logger=wandb",
            *kill,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_result(tmp_path / "run").status == "ok"
    assert "Traceback" not in done.stderr
    assert all(line.startswith("warning: W&B ") for line in done.stderr.splitlines()), done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok: test MSE ")
    assert done.stderr.count("W&B could not finish the run") == 1, done.stderr


@pytest.mark.slow
def test_a_server_that_refuses_the_credentials_is_warnings_before_the_result(tmp_path):
    """A server that answers 401 (the key is wrong): the run logs offline; W&B's lines are
    warnings, all before the run's last line (an ok run used to print error lines after its
    result, from wandb's exit), and none of wandb's own."""
    server = http_server(get=401, post=401)
    try:
        done, run_dir = online_run(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_result(run_dir).status == "ok"
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("warning: W&B ") for line in lines), done.stderr
    assert "wandb:" not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok: test MSE ")
