"""W&B never prompts and never stops a run; every job gets a run of its own."""

from __future__ import annotations

import pytest

from sdexp import loggers
from sdexp.errors import ConfigError
from sdexp.training import train
from tests.conftest import FAST_TOY, compose_config


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


def test_online_failure_falls_back_to_offline(no_credentials, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    started = []

    def fake_init(**kwargs):
        started.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise ConnectionError("api.wandb.ai unreachable")
        return object()

    monkeypatch.setattr("wandb.init", fake_init)
    with pytest.warns(UserWarning, match="logging offline"):
        logger = loggers.wandb_logger(str(tmp_path), project="p", name="n")
    assert started == ["online"]
    assert logger._wandb_init["mode"] == "offline"


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
