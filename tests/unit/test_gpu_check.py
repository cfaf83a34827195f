"""scripts/gpu_check.py on the CPU: its arithmetic on fabricated measurements (its pool of
concurrent runs: tests/e2e/test_scripts.py). The whole check's dry run (QUICK=1 python
scripts/gpu_check.py DIR, about 7 minutes here, most of it compiling) is run by hand: the
manual's Performance page, docs/performance/README.md."""

from __future__ import annotations

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def check():
    return load_script("gpu_check")


def digits_run(precision: str, seed: int, test: float, losses: dict) -> dict:
    return {"precision": precision, "seed": seed, "status": "ok", "test": test, "losses": losses}


def test_precisions_are_compared_seed_by_seed(check):
    runs = [
        digits_run("32-true", 0, 1.0, {0: 2.0, 1: 1.0}),
        digits_run("bf16-mixed", 0, 1.5, {0: 2.1, 1: 1.0, 2: 0.5}),
        digits_run("32-true", 1, 2.0, {0: 2.0}),
        digits_run("bf16-mixed", 1, 2.1, {0: 1.7}),
        digits_run("bf16-mixed", 2, 9.0, {0: 9.0}),  # no fp32 twin: not paired
    ]
    runs.append({**digits_run("32-true", 2, 50.0, {}), "status": "failed"})
    found = check.compare_precisions(runs)
    assert found["32-true"] == {"n": 2, "mean": 1.5, "std": pytest.approx(0.7071, abs=1e-4)}
    assert found["bf16-mixed"]["n"] == 3
    paired = found["bf16_minus_fp32"]
    assert paired["n"] == 2 and paired["mean"] == pytest.approx(0.3)
    drift = found["loss_drift"]  # steps both took: |0.1|, |0|, |0.3|
    assert drift["steps"] == 3 and drift["max"] == pytest.approx(0.3)
    assert drift["mean"] == pytest.approx(0.4 / 3)


def test_drift_follows_the_steps_both_runs_took_in_order(check):
    eager = [[1.0, 2.0], [3.0]]  # fewer steps at the first budget: the runs part there
    graphed = [[1.0, 2.5, 9.0], [3.0]]
    assert check.drift(eager, graphed) == {"steps": 2, "mean": 0.25, "max": 0.5}
    assert check.drift([[1.0], [2.0]], [[1.5], [2.0]])["steps"] == 2


def test_compiled_runs_in_the_pool_only_if_it_pays(check):
    def speed(graphed: float, compiled: float) -> dict:
        return {
            "runs": [
                {
                    "variant": v,
                    "precision": "bf16-mixed",
                    "budgets": [
                        {"budget": 1.0, "images_per_s": 99 * r},
                        {"budget": 0.5, "images_per_s": r},
                    ],
                }
                for v, r in (("graphed", graphed), ("compiled", compiled))
            ]
        }

    assert check.compiled_pays(speed(100.0, 111.0), "bf16-mixed")
    assert not check.compiled_pays(speed(100.0, 109.0), "bf16-mixed")
    assert not check.compiled_pays(speed(100.0, 200.0), "32-true")  # not measured in fp32
    assert not check.compiled_pays({}, "bf16-mixed")


def test_the_digits_sweep_takes_the_gpu_fast_paths_on_a_gpu_only(check, tmp_path):
    gpu = check.digits_command(check.Sizes(), tmp_path, quick=False)
    assert "speed.cuda_graphs=true" in gpu and "hydra.launcher.n_jobs=8" in gpu
    assert "seed=0,1,2,3" in gpu and "trainer.precision=32-true,bf16-mixed" in gpu
    cpu = check.digits_command(check.QUICK, tmp_path, quick=True)
    assert not any(a.startswith("speed.") for a in cpu) and "trainer.max_epochs=2" in cpu
