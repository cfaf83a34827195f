"""What a theory experiment hands back, and how it is written and logged.

Every experiment returns an ``Outcome``: its numbers as tables (one CSV each), one figure in the
style of the paper's (PNG), a short markdown summary that puts our numbers beside the paper's and
the theory's, and a few key numbers (``metrics``: the W&B summary).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at import: a refused experiment ends before pandas and Lightning
    import pandas as pd
    from matplotlib.figure import Figure
    from pytorch_lightning.loggers import Logger

SUMMARY_FILE = "summary.md"


@dataclass
class Outcome:
    name: str  # the experiment: depth, gradient, regularizer, normality
    title: str  # what it checks, in the paper's words
    tables: dict[str, pd.DataFrame]  # written as <key>.csv
    figure: Figure  # written as <name>.png
    summary: str  # markdown
    metrics: dict[str, float] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the CSVs, the PNG and summary.md into ``out_dir``; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for key, frame in self.tables.items():
            files[key] = out / f"{key}.csv"
            frame.to_csv(files[key], index=False)
        files["figure"] = out / f"{self.name}.png"
        self.figure.savefig(files["figure"], dpi=110, bbox_inches="tight")
        files["summary"] = out / SUMMARY_FILE
        files["summary"].write_text(f"# {self.title}\n\n{self.summary.strip()}\n")
        return files

    def log(self, logger: Logger, config: dict, files: dict[str, Path]) -> None:
        """Config, key numbers, and for W&B the figure and every table."""
        from pytorch_lightning.loggers import WandbLogger

        logger.log_hyperparams(config)
        logger.log_metrics(self.metrics)
        if isinstance(logger, WandbLogger):
            import wandb

            media = {f"{self.name}/figure": wandb.Image(str(files["figure"]))}
            for key, frame in self.tables.items():
                media[f"{self.name}/{key}"] = wandb.Table(dataframe=frame)
            logger.experiment.log(media)
            logger.experiment.summary.update(self.metrics)
        logger.save()


def markdown_table(columns: Sequence[str] | str, rows: Iterable[Sequence[object] | str]) -> str:
    """A GitHub markdown table; cells are printed with ``str``, so format numbers first. The header
    or a row may be one string, its cells already joined by " | "."""
    columns = columns.split(" | ") if isinstance(columns, str) else columns
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += [f"| {row if isinstance(row, str) else ' | '.join(map(str, row))} |" for row in rows]
    return "\n".join(lines)


def check_mark(ok: bool) -> str:
    return "yes" if ok else "**no**"
