"""The results contract: every run writes ``results.json`` in its output directory.

Sweeps, tables and benchmarks read only this file. Fields: dataset, model, mode, budget, seed,
stable, epochs, survival, sensitivity, expected_depth, depth_variance, test_error (%) or test_mse,
test_loss, best_val_error or best_val_mse, train_time_s, status ("ok" or "failed"), reason (when
failed) and version. It is written atomically: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

RESULTS_FILE = "results.json"


def write_results(run_dir: str | Path, results: dict) -> Path:
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(results, tmp, indent=2)
    os.replace(tmp.name, path)
    return path


def read_results(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.exists() else None
