"""The report page: one self-contained HTML file, sections (sections.py) shown only where the run has their data.

Plots are plotly: interactive (zoom, hover for member/step/value, toggle traces), the plotly.js bundle is inlined
once in the page head so the file works offline with no CDN, and WebGL (scattergl) keeps scatters of tens of
thousands of points responsive. Vega-Altair was the alternative; its vega bundles are also inlinable, but it has
no WebGL path and its JSON specs carry data as row records, several times larger than plotly's typed arrays.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.offline

from .. import __version__
from ..analysis.summary import grid_labels
from ..exceptions import StoreError
from ..spec import changed_keys
from ..store import Layout, Run, os_reason, write_file
from . import data
from .sections import (Section, curves_section, dynamics_section, experiments_section, glance_section,
                       hidden_section, inside_section, language_section, maps_section, phase_section, rules_section,
                       sae_section, scaling_section, seeds_section)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 16px 40px; color: #222; }
nav { position: sticky; top: 0; background: #fff; padding: 8px 0; border-bottom: 1px solid #ddd; z-index: 10; }
nav a { margin-right: 14px; color: #0072B2; text-decoration: none; }
section { margin-top: 28px; } h1 { margin-bottom: 4px; } .muted { color: #666; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
table.spec td { text-align: left; max-width: 900px; } table.spec th { text-align: left; }
tr.diverged td { background: #fde2dc; } .figure { margin: 10px 0; border: 1px solid #eee; }
"""


@dataclass
class ReportContext:
    """What a report section reads: the run, its per-member summary, its scalar names, each member's grid point."""

    run: Run
    summary: pd.DataFrame  # one row per member (data.summary)
    names: list[str]  # the run's scalar names
    configs: pd.Series  # member -> grid point label


SECTIONS: dict[str, Callable[[ReportContext], Section | None]] = {}  # in page order


def report_section(key: str) -> Callable:
    """Decorator registering `build(context: ReportContext) -> Section | None` as the report section `key` (its
    anchor); sections appear in the order they were registered, ontogeny's own first, and one that returns None
    (nothing to show for this run) is left out."""
    def register(build: Callable[[ReportContext], Section | None]) -> Callable[[ReportContext], Section | None]:
        if key in SECTIONS and SECTIONS[key] is not build:
            raise ValueError(f"two report sections named {key!r}")
        SECTIONS[key] = build
        return build
    return register


for _key, _build in {
        "glance": lambda c: glance_section(c.run, c.summary), "curves": lambda c: curves_section(c.run, c.names,
                                                                                                 c.configs),
        "hidden": lambda c: hidden_section(c.run, c.summary), "phase": lambda c: phase_section(c.run, c.summary),
        "seeds": lambda c: seeds_section(c.run, c.summary), "maps": lambda c: maps_section(c.run),
        "language": lambda c: language_section(c.run, c.names),
        "rules": lambda c: rules_section(c.run, c.names, c.configs),
        "experiments": lambda c: experiments_section(c.run), "scaling": lambda c: scaling_section(c.run),
        "sae": lambda c: sae_section(c.run), "dynamics": lambda c: dynamics_section(c.run, c.names, c.configs),
        "inside": lambda c: inside_section(c.run, c.configs)}.items():
    report_section(_key)(_build)


def render_report(run: Run, *, head_extra: str = "", progress: Callable[[str, int, int], None] | None = None) -> str:
    """The whole report of `run` as one HTML string (plotly.js inlined once); `head_extra` goes in <head>;
    `progress(section, its number from 1, the number of sections)` is called as each section starts."""
    members = run.members()
    context = ReportContext(run, data.summary(run), data.scalar_names(run),
                            grid_labels(members).set_axis(members.member))
    sections = []
    for number, (name, build) in enumerate(SECTIONS.items(), 1):
        if progress:
            progress(name, number, len(SECTIONS))
        sections.append(build(context))
    sections = [s for s in sections if s is not None]
    nav = "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2><p>{html.escape(s.intro)}</p>{"".join(s.blocks)}'
        "</section>" for s in sections)
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    title = html.escape(f"{run_name(run)}: ontogeny report")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style><script>{plotly.offline.get_plotlyjs()}</script>{head_extra}</head><body>"
            f"<h1>{html.escape(run_name(run))}</h1><p class='muted'>{html.escape(str(run.path))} - report made "
            f"{made} by ontogeny {__version__} with plotly.js {plotly.offline.get_plotlyjs_version()} inlined "
            "(works offline)</p>"
            f"<nav>{nav}</nav>{body}</body></html>")


def run_name(run: Run) -> str:
    """What the run is: its directory's name, with the spec's (a recipe's) name and the keys changed from it."""
    if not run.has_spec:
        return run.path.name
    name, changes = run.spec.name, changed_keys(run.spec)
    what = ", ".join(part for part in (name if run.path.name != name else "", changes and f"changed: {changes}")
                     if part)
    return f"{run.path.name} ({what})" if what else run.path.name


def write_report(run_dir: str | Path, out: str | Path | None = None, *,
                 progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Write the report of the run in `run_dir` to `out` (default `run_dir/report.html`); return its path.
    `progress` as `render_report`'s."""
    with Run(run_dir) as run:
        page = render_report(run, progress=progress)
    path = Path(out) if out is not None else Layout(run_dir).report
    try:
        write_file(path, page)  # atomic: a full disk leaves the old report (or none), never half of one
    except OSError as err:
        raise StoreError(f"{path}: cannot write the report ({os_reason(err)})") from None
    return path


