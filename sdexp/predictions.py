"""predictions.csv, beside a run's results.json: the test set's per-example predictions, so that
the analysis sees the test set's own sampling noise (``sdexp.analysis.images``).

One row per test example and tested model (``final``, and ``best`` where validation chose a
checkpoint), each number the float32 value the test computed, written by shortest repr so that
it reads back the same: the tests recompute the run's test error and MSE from it to the last
digit. Written atomically, before results.json; under DDP rank 0 writes every rank's examples.
"""

from __future__ import annotations

from pathlib import Path

from sdexp.results import PREDICTIONS_FILE, write_atomically

#: predictions.csv's columns, by the run's metric: what a model predicted for each test example.
PREDICTION_COLUMNS = {
    "error": ["identity", "model", "index", "target", "predicted", "loss"],
    "mse": ["identity", "model", "index", "target", "prediction", "squared_error"],
}
#: The test stages of a run (``sdexp.run.module``) as predictions.csv names their models.
TESTED_MODELS = {"test": "final", "test_best": "best"}


class UnreadablePredictions(Exception):
    """A predictions.csv that cannot be read, or is of another run; the message names it."""


def write_predictions(run_dir: str | Path, identity: str, metric: str, tested: dict) -> Path:
    """predictions.csv (``PREDICTION_COLUMNS``) from ``tested``: by model (``final``, ``best``),
    arrays ``index``, ``target``, ``output`` and ``loss``, one entry per test example."""
    lines = [",".join(PREDICTION_COLUMNS[metric])]
    for model, arrays in tested.items():
        columns = [arrays[k].tolist() for k in ("index", "target", "output", "loss")]
        lines += [
            f"{identity},{model},{','.join(map(repr, row))}" for row in zip(*columns, strict=True)
        ]
    return write_atomically(Path(run_dir) / PREDICTIONS_FILE, "\n".join(lines) + "\n")


def read_predictions(run_dir: str | Path, identity: str, metric: str):
    """The run's predictions.csv as a DataFrame, None if there is none; ``UnreadablePredictions``
    if it cannot be read, has other columns, or is another run's."""
    import pandas as pd  # the analysis reads this; a run only writes it

    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.exists():
        return None
    try:
        frame = pd.read_csv(path, dtype={"identity": str, "model": str})
    except (OSError, ValueError) as error:
        raise UnreadablePredictions(f"{path}: unreadable ({error})") from error
    if list(frame.columns) != PREDICTION_COLUMNS[metric]:
        raise UnreadablePredictions(f"{path}: columns {list(frame.columns)}, not a {metric} run's")
    if set(frame["identity"]) != {identity}:
        raise UnreadablePredictions(f"{path}: of another run (not identity {identity})")
    return frame
