"""Write docs/reference/tables.md from the store's schemas and the analysis steps' docstrings:
`python docs/make_tables.py` (tests/test_docs.py fails when the page differs from what this writes)."""

from __future__ import annotations

import inspect
from pathlib import Path

from ontogeny.analysis.analyze import ANALYSES
from ontogeny.sae.run import TABLES as SAE_TABLES
from ontogeny.store.schema import MEMBER_SETTINGS, STREAMED, WRITER_TABLES, read_schema

PAGE = Path(__file__).parent / "reference" / "tables.md"
ABOUT = {
    "scalars": "Every curve: one value per member, step and name (`test/acc`, `test/<subset>/loss`, `weight_norm`...)",
    "examples": "Per-example loss and correctness per member, step and split",
    "checkpoints": "Saved weights: one safetensors file per member and step",
    "members": "One row per member: its seeds, status and one column per setting, named by its spec key "
               f"(`optim.lr`); some producers add {', '.join(f'`{k}`' for k in MEMBER_SETTINGS)}",
    "subsets": "Which examples of a split belong to each subset",
    "tokens": "Per-token probes: which token of which sequence each example is",
    "revisions": "Checkpoint suites: one row per ingested revision, with hashes of its weights and config",
}


def page() -> str:
    lines = ["# Tables and their columns", "",
             "Every run holds the tables its producer writes; `og.open(path).table(name)` or `run.sql(...)` reads "
             "any of them. Written by `python docs/make_tables.py` from the store's schemas and the analysis steps.",
             "", "## Recorded tables", ""]
    for name, schema in {**STREAMED, **WRITER_TABLES}.items():
        columns = ", ".join(f"`{f.name}` ({f.type})" for f in read_schema(schema))
        lines += [f"### {name}", "", f"{ABOUT[name]}. Columns: {columns}.", ""]
    lines += ["## Analysis tables", "", "Written by `ontogeny analyze` (steps marked on request run only when named "
              "with `--what`):", ""]
    for name in sorted(ANALYSES.names()):  # registration order depends on what was imported first
        step = ANALYSES.get(name)
        doc = " ".join((inspect.getdoc(step.function) or "").split())
        writes = f" Writes {', '.join(f'`{t}`' for t in step.writes)}." if step.writes else ""
        lines.append(f"- **{name}**{' (on request)' if step.on_request else ''}: {doc}{writes}")
    lines += ["", f"An `ontogeny sae` run also holds {', '.join(f'`{t}`' for t in SAE_TABLES)} (cross-seed agreement "
              "of its SAEs; see `ontogeny.sae`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    PAGE.write_text(page())
