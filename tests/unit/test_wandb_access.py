"""W&B's mode and server probe (``sdexp.tracking.wandb_access``), with real sockets: credentials
decide online or offline, and a server must answer, not only accept connections (runs against such
servers: tests/e2e/test_loggers.py)."""

from __future__ import annotations

import pytest

from sdexp.errors import ConfigError
from sdexp.tracking import wandb_access
from tests.helpers import closed_port, half_answering_server, http_server


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


def test_the_probe_wants_an_answer_not_a_connection(silent_server, monkeypatch):
    """Real sockets: a server that answers wandb's kind of request, a POST, (any status but a
    server error) passes; one that refuses, does not answer in time (TLS handshake included),
    answers 5xx, or answers GET only (a proxy's page) does not."""
    answers, broken = http_server(get=500, post=401), http_server(get=200, post=503)
    get_only = half_answering_server()
    try:
        for url, problem in [
            (f"http://127.0.0.1:{answers.server_address[1]}", None),
            (f"http://127.0.0.1:{broken.server_address[1]}", "answered HTTP 503"),
            (f"http://127.0.0.1:{get_only.server_address[1]}", "did not answer within 0.5 s"),
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
        get_only.shutdown()
