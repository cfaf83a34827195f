"""Access to Weights & Biases without Lightning: credentials, whether the server answers, the mode
a run logs in, a start that falls back to offline, reading an offline run back, the finish.

``mode: auto`` logs online when W&B credentials exist and offline otherwise; ``WANDB_MODE`` wins.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import netrc
import os
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar, get_args
from urllib.parse import urlparse

from sdexp.errors import ConfigError

log = logging.getLogger(__name__)

#: How a run logs to W&B (``logger.mode``; auto: online with credentials, else offline).
WandbMode = Literal["auto", "online", "offline", "disabled"]
WANDB_MODES = get_args(WandbMode)
T = TypeVar("T")

#: How long the server has to answer the probe before a run logs offline (``server_problem``).
PROBE_TIMEOUT_S = 5.0


def wandb_base_url() -> str:
    """The W&B server's address: ``WANDB_BASE_URL``, else the public server."""
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def wandb_server() -> tuple[str, int]:
    """The W&B server's host and port."""
    url = urlparse(wandb_base_url())
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer: the probe does not follow it."""

    def redirect_request(self, *args, **kwargs) -> None:
        return None


def _ask(url: str, timeout_s: float) -> str | None:
    """One POST of a GraphQL query to ``<url>/graphql`` (what ``wandb.init`` sends first): None
    if the server answers with a status below 500, else why not."""
    # Only whether it answers matters: the probe does not verify a certificate wandb would
    # accept through its own CA settings.
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=tls))
    request = urllib.request.Request(
        f"{url.rstrip('/')}/graphql",
        data=b'{"query": "{ serverInfo { latestLocalVersionInfo { latestVersionString } } }"}',
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        opener.open(request, timeout=timeout_s).close()
    except urllib.error.HTTPError as error:  # an answer, if not a server error
        error.close()
        return f"answered HTTP {error.code}" if error.code >= 500 else None
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            return f"did not answer within {timeout_s:g} s"
        return f"could not be reached ({one_line(reason)})"
    return None


def server_problem(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the W&B server cannot take a run now, or None if it answers: a GraphQL POST must get
    an answer that is not a server error (5xx) within ``timeout_s``, DNS and TLS included.

    Ours: wandb has no quick check, its ``init_timeout`` does not bound a server that answers GET
    and never POST, and a stuck proxy accepts connections and never answers. A thread joined with
    a deadline, so that nothing (a slow DNS lookup) outlasts ``timeout_s``."""
    url = wandb_base_url()
    answer: list[str | None] = []
    probe = threading.Thread(target=lambda: answer.append(_ask(url, timeout_s)), daemon=True)
    probe.start()
    probe.join(timeout_s + 0.5)  # the socket's own timeout ends the thread first, or near
    return answer[0] if answer else f"did not answer within {timeout_s:g} s"


def one_line(message: object, limit: int = 300) -> str:
    """``message`` on one line, at most ``limit`` characters (wandb's errors can hold HTML)."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_wandb_credentials() -> bool:
    """Whether wandb could log in without asking (wandb has no public call that says so)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(wandb_server()[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    if mode not in WANDB_MODES:
        raise ConfigError("logger.mode", f"one of {list(WANDB_MODES)}, got {mode!r}")
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
    return "offline" if mode == "dryrun" else mode


def offline_summary(run_dir: Path) -> dict:
    """The summary of an offline W&B run, read by wandb (``wandb leet inspect``), or empty."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json"]
    try:
        done = subprocess.run([*command, str(run_dir)], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout).get("summary") or {}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}


def start_service(log_file: Path | None) -> None:
    """wandb's service process (``wandb.setup``), if none runs: its stderr (a Go panic when a
    server sends what it cannot read) goes to ``log_file`` (``wandb/service.log``), not to the
    run's console. wandb's own terminal lines are off (``WANDB_SILENT``, unless set)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    if log_file is None or "WANDB_SERVICE" in os.environ:  # nowhere to write, or it runs
        wandb.setup()
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)  # file descriptor 2 into log_file: the child's, for its life
    try:
        with open(log_file, "ab") as file:
            os.dup2(file.fileno(), 2)
        wandb.setup()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def with_fallback(
    start: Callable[[str], T], mode: str = "auto", service_log: Path | None = None
) -> T | None:
    """``start(mode)``, which starts a W&B run that must not stop or wait: offline when the
    server does not answer or the run cannot start online; None if it cannot start at all."""
    mode = resolve_wandb_mode(mode)
    if mode == "online" and (problem := server_problem()) is not None:
        host, port = wandb_server()
        log.warning(f"W&B server {host}:{port} unreachable ({problem}): logging offline")
        # The whole process: wandb sends its telemetry from a process whose settings are online
        # (10 s and more at exit), and the sweep's next jobs in this process need not ask again.
        os.environ["WANDB_MODE"] = mode = "offline"
    for attempt in [mode, "offline"] if mode == "online" else [mode, mode]:
        try:
            start_service(service_log)
            return start(attempt)
        except Exception as error:  # server error, bad key, timeout, "run ID ... is in use"
            log.warning(f"W&B could not start {attempt} ({one_line(error)})")
            # The failed run (or a killed one of a process sharing this service through
            # WANDB_SERVICE) still holds its id in the service: the next attempt starts its own.
            end_service()
    log.warning("W&B could not start: nothing of this is logged to W&B")
    return None


def end_service() -> None:
    """Stop this process's wandb service (a new run starts its own); never raises."""
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        with contextlib.suppress(Exception):
            wandb.teardown()
    os.environ.pop("WANDB_SERVICE", None)


#: The W&B runs ``finish`` could not end (a service gone): not asked again.
_unfinishable: set[str] = set()


def finish(exit_code: int = 0) -> None:
    """End this job's W&B run (if any), so that the next job in the process starts its own. Never
    raises: a run that cannot be ended is one warning, and its service is stopped."""
    wandb = sys.modules.get("wandb")  # not imported: no run to finish (and wandb may be absent)
    if wandb is None or wandb.run is None or wandb.run.id in _unfinishable:
        return
    run, folder = wandb.run, Path(wandb.run.dir).parent
    try:
        run.finish(exit_code=exit_code)
    except Exception as error:  # noqa: BLE001
        _unfinishable.add(run.id)
        said = f"{type(error).__name__}: {one_line(error)}".rstrip(": ")
        log.warning(
            f"W&B could not finish the run ({said}); its files, which wandb sync uploads: {folder}"
        )
        end_service()
