"""W&B never prompts and never stops a run; every job gets a run of its own."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sdexp import loggers
from sdexp.errors import ConfigError
from sdexp.results import read_result
from sdexp.training import train
from tests.conftest import FAST_TOY, ROOT, compose_config


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("NETRC", raising=False)


def test_auto_is_offline_without_credentials(no_credentials):
    assert not loggers.has_wandb_credentials()
    assert loggers.resolve_wandb_mode("auto") == "offline"


def test_auto_is_online_with_credentials(no_credentials, monkeypatch, tmp_path):
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert loggers.has_wandb_credentials()
    assert loggers.resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment wins over auto
    assert loggers.resolve_wandb_mode("auto") == "offline"
    assert loggers.resolve_wandb_mode("disabled") == "disabled"


def test_unknown_mode(no_credentials):
    with pytest.raises(ConfigError, match="logger.mode"):
        loggers.resolve_wandb_mode("sometimes")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: a W&B server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def failing_server():
    """An HTTP server on 127.0.0.1 that answers every request with 500: reachable, not W&B."""

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_error(500)

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def online_run(tmp_path: Path, base_url: str, *extra: str):
    """A toy run with W&B credentials (logger.mode=auto: online) and the server at base_url."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env |= {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": base_url, "HOME": str(tmp_path)}
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *FAST_TOY, "logger=wandb"]
    command += [f"hydra.run.dir={run_dir}", *extra]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, run_dir


@pytest.mark.slow
def test_a_dead_server_does_not_stop_the_run(tmp_path):
    """Credentials present, nothing listening at the server's address: the real wandb client
    logs offline and the run finishes (it once crashed after ~110 s with "run ID is in use")."""
    done, run_dir = online_run(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unreachable: logging offline" in done.stdout + done.stderr
    assert read_result(run_dir).status == "ok"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert inspect(offline)["state"] == "finished"


@pytest.mark.slow
def test_a_failing_server_does_not_stop_the_run(tmp_path, failing_server):
    """Reachable but broken: wandb.init online fails (after its init timeout), and the run goes
    on offline under the same W&B id."""
    done, run_dir = online_run(tmp_path, failing_server, "+logger.settings.init_timeout=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "could not start online" in done.stdout + done.stderr
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
