"""W&B never prompts and never stops a run; every job gets a run of its own."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from sdexp import wandb_access
from sdexp.errors import ConfigError
from sdexp.results import read_result
from sdexp.training import train
from tests.conftest import FAST_TOY, ROOT, compose_config, run_train, user_env
from tests.test_sweeps import wait_for


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)


def test_auto_is_offline_without_credentials(no_credentials):
    assert not wandb_access.has_wandb_credentials()
    assert wandb_access.resolve_wandb_mode("auto") == "offline"


def test_auto_is_online_with_credentials(no_credentials, monkeypatch, tmp_path):
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_access.has_wandb_credentials()
    assert wandb_access.resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment wins over auto
    assert wandb_access.resolve_wandb_mode("auto") == "offline"
    assert wandb_access.resolve_wandb_mode("disabled") == "disabled"


def test_unknown_mode(no_credentials):
    with pytest.raises(ConfigError, match="logger.mode"):
        wandb_access.resolve_wandb_mode("sometimes")


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


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


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


@pytest.fixture
def failing_server():
    """Answers the probe (404, as a server that has no such page) and fails every GraphQL call
    with 500: it answers, but no W&B run can start there."""
    server = http_server(get=404, post=500)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_probe_wants_an_answer_not_a_connection(silent_server, monkeypatch):
    """Real sockets: a server that answers (any status but a server error) passes; one that
    refuses, does not answer in time (TLS handshake included) or answers 5xx does not."""
    answers, broken = http_server(get=404, post=500), http_server(get=503, post=503)
    try:
        for url, problem in [
            (f"http://127.0.0.1:{answers.server_address[1]}", None),
            (f"http://127.0.0.1:{broken.server_address[1]}", "answered HTTP 503"),
            (f"http://127.0.0.1:{closed_port()}", "could not be reached ("),
            (silent_server.url, "did not answer within 0.5 s"),
            ("https" + silent_server.url[4:], "did not answer within 0.5 s"),
        ]:
            monkeypatch.setenv("WANDB_BASE_URL", url)
            found = wandb_access.server_problem(timeout_s=0.5)
            assert (found is None) if problem is None else found.startswith(problem), url
    finally:
        answers.shutdown()
        broken.shutdown()


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
    assert inspect(offline)["state"] == "finished"


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
    record = inspect(offline)
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
    """It answers but cannot start a run: wandb.init online fails (after its init timeout),
    and the run goes on offline under the same W&B id."""
    done, run_dir = online_run(tmp_path, failing_server, "logger.settings.init_timeout=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "could not start online" in done.stderr  # a warning: on stderr
    assert read_result(run_dir).status == "ok"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    record = inspect(offline)
    assert record["state"] == "finished" and record["summary"]["status"] == "ok"


def inspect(wandb_run: Path) -> dict:
    """A W&B run's state, config and summary, read back from its files by wandb itself."""
    done = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(wandb_run)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_jobs_in_one_process_get_their_own_runs(tmp_path):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"job{seed}"
        train(compose_config([f"output_dir={out}", *FAST_TOY, f"seed={seed}", "logger=wandb"]))
        (run,) = (out / "wandb").glob("offline-run-*")
        runs.append(run.name.rsplit("-", 1)[-1])
    assert runs[0] != runs[1]
    import wandb

    assert wandb.run is None  # finished at the end of each job


@pytest.mark.slow
def test_a_failed_run_ends_its_wandb_run_as_failed(tmp_path):
    """A NaN loss: the W&B run ends with a non-zero exit code and says why in its summary."""
    run_dir = tmp_path / "run"
    done = run_train(
        *FAST_TOY,
        "optimizer.lr=1e4",
        "trainer.log_every_n_steps=1",
        "logger=wandb",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 1
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    record = inspect(wandb_run)
    assert record["exit_code"] != 0
    summary = record["summary"]
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["reason"]
    assert (summary["mode"], summary["dataset"], summary["model"]) == ("uniform", "toy", "vanilla")


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


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["sigkill", "interrupt"])
def test_a_resumed_run_continues_its_wandb_history(tmp_path, stop):
    """Stopped mid-epoch 1 and resumed from epoch 0's checkpoint (step 8), the run computes the
    steps after it again. Its W&B history continues from the checkpoint's step (nothing logged
    at lower steps again) and skips what the W&B run already holds: nothing, when the killed
    process never got to write its offline run; the steps to the interruption otherwise."""
    run_dir = tmp_path / "run"
    args = [*FAST_TOY, "trainer.log_every_n_steps=1", "logger=wandb", f"hydra.run.dir={run_dir}"]
    command = [sys.executable, str(ROOT / "train.py"), *args]
    env = user_env()
    if stop == "sigkill":
        pause = ["+callbacks.pause._target_=tests.helpers.PauseOnce", "+callbacks.pause.batch=4"]
        process = subprocess.Popen(
            [*command, *pause], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        wait_for(run_dir / "paused", process)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
        command += pause
    else:
        command += ["+callbacks.stop._target_=tests.helpers.InterruptOnce"]
        first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert first.returncode != 0 and not (run_dir / "results.json").exists()
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = (history_steps(r) for r in sorted((run_dir / "wandb").glob("offline-run-*")))
    assert min(second) >= 8 and second == sorted(second)  # 8: the checkpoint's step
    if stop == "interrupt":
        assert max(first) > 8 and min(second) > max(first)


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
