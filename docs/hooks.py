"""mkdocs hook: the generated pages. A page holding `<!-- generated: NAME -->` gets that reference in its place,
built from the declarations themselves (resm_core/reference.py) and from the benchmark records
(benchmarks/results/*.json, written by the scripts in benchmarks/), so no reference is written twice."""

from __future__ import annotations

import json
import re
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
REPO = "https://github.com/resm-3h/resm-3h"


def benchmark_records() -> str:
    """Each benchmark record: what was measured, the command, the date and machine, and its table."""
    out: list[str] = []
    for path in sorted(RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        out += [f"### {record['title']}", ""]
        out += [f"`{record['command']}` on {record['date']}; {record['machine']}.", ""]
        if record.get("note"):
            out += [record["note"], ""]
        rows = record["rows"]
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            out += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            out += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
        out.append("")
    return "\n".join(out) if out else "No benchmark record yet: run a script in `benchmarks/`."


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value).replace("|", "\\|")


def readme() -> str:
    """The README as the site's home page, its links made relative to docs/."""
    text = (RECORDS.parents[1] / "README.md").read_text()
    text = text.replace("](docs/", "](").replace("](CONTRIBUTING.md)", f"]({REPO}/blob/main/CONTRIBUTING.md)")
    return text


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs' hook signature)
    from resm_core.reference import cli_reference, config_reference

    generators = {
        "configuration": config_reference,
        "cli": cli_reference,
        "benchmarks": benchmark_records,
        "readme": readme,
    }
    return re.sub(r"<!-- generated: (\w+) -->", lambda m: generators[m.group(1)](), markdown)
