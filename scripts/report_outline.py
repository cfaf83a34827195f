"""The W&B Report of a sweep as text: what ``sdexp-dashboard --dry-run SPEC.json`` specified, its
sections in order, in each the runs tables and the panels with the run set each one shows.

    sdexp-dashboard --entity ENTITY --project sdexp --group table2_cifar10 --dry-run spec.json
    python scripts/report_outline.py spec.json

README.md shows this outline where a screenshot of a saved report would go (none was taken:
saving a report needs a W&B server); tests/unit/test_docs.py holds README's copy to what this
script prints for the report sdexp-dashboard builds at HEAD. Reads the JSON only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def shown_keys(keys: list[str]) -> str:
    """``summary:test`` -> ``test``; a custom chart's table columns as ``table#column``."""
    names = [key.split(":", 1)[1] for key in keys if not key.startswith("summary:layers/")]
    return ", ".join(name.replace("layers/", "") for name in names)


def outline(spec: dict) -> str:
    lines = [spec["title"]]
    sections: list[str] = []
    for item in spec["runsets"] + spec["panels"]:
        if item["section"] not in sections:
            sections.append(item["section"])
    for number, section in enumerate(sections, 1):
        lines.append(f"{number}. {section}")
        for runset in spec["runsets"]:
            if runset["section"] == section and runset["runs_table"]:
                grouped = ", ".join(key.split(":", 1)[1] for key in runset["groupby"])
                by = f", grouped by {grouped}" if grouped else ""
                columns = shown_keys(runset["columns"])
                lines.append(f"   runs table: {runset['name']}{by}: {columns}")
        for panel in spec["panels"]:
            if panel["section"] != section:
                continue
            by = panel["grouping"].get("by")
            grouped = f", by {by.split(':', 1)[1]}" if by else ""
            title = f" {panel['title']!r}" if panel["title"] else ""
            keys = shown_keys(panel["keys"])
            reads = f" ({keys})" if keys else ""
            lines.append(f"   {panel['type']}{title}{reads}: {panel['runset']}{grouped}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="the JSON that sdexp-dashboard --dry-run wrote")
    args = parser.parse_args(argv)
    print(outline(json.loads(args.spec.read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
