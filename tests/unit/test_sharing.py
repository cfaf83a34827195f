"""Several runs per GPU, the parts that need no process of their own (``sdexp.run.sharing``): CPU
shares of the slots, the callback's checks, the sweep's MPS daemon without its control program,
threads outside a run's identity (processes, scripts/mps.sh and sweeps:
tests/e2e/test_sharing.py)."""

from __future__ import annotations

import pytest

from sdexp.errors import ConfigError
from sdexp.run.identity import run_key
from sdexp.run.sharing import MPSDaemon, PinThreads, check_threads, cpu_share
from tests.helpers import FAST_TOY, SWEEP


@pytest.mark.parametrize(
    ("slot", "slots", "cpus", "share"),
    [
        (0, 4, list(range(16)), [0, 1, 2, 3]),
        (3, 4, list(range(16)), [12, 13, 14, 15]),
        (1, 3, list(range(16)), [5, 6, 7, 8, 9]),
        (2, 8, [1, 3, 5, 7], [5]),  # more slots than CPUs: round-robin
        (7, 8, [1, 3, 5, 7], [7]),
        (0, 1, [2, 0, 1], [0, 1, 2]),
    ],
)
def test_cpu_shares(slot, slots, cpus, share):
    assert cpu_share(slot, slots, cpus) == share


def test_shares_of_all_slots_are_disjoint():
    cpus = list(range(16))
    for slots in (1, 2, 3, 4, 8):
        shares = [set(cpu_share(s, slots, cpus)) for s in range(slots)]
        assert sum(len(s) for s in shares) == len(set().union(*shares))


def test_the_callback_checks_its_job_count():
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs"):
        PinThreads(jobs=0)
    assert PinThreads(jobs=3).jobs == 3


def test_without_the_control_program_the_sweep_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPS_CONTROL", str(tmp_path / "missing"))
    daemon = MPSDaemon()
    daemon.on_multirun_start(SWEEP)
    daemon.on_multirun_end(SWEEP)
    assert capsys.readouterr().out == (
        "MPS: not started (nvidia-cuda-mps-control not found): the runs share the GPU without it\n"
    )


def test_threads_are_not_part_of_a_runs_identity(make_config):
    """A run asked again with another thread count is the same run (same numbers up to float
    rounding): it is skipped or resumed, not trained again."""
    key = run_key(make_config(*FAST_TOY))[0]
    for threads in ("threads=1", "threads=4", "threads=null", "threads=auto"):
        assert run_key(make_config(*FAST_TOY, threads))[0] == key, threads
    for bad in (0, -2, 1.5, "many", True):
        with pytest.raises(ConfigError, match="threads"):
            check_threads(bad)
