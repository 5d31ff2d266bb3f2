"""The report's own sections, each built from one run: the glance, curves, hidden transitions, phases, seeds,
maps, language, rules, experiments, SAEs, scaling, dynamics and what was recomputed inside the models;
and the HTML pieces they are made of (Section, figure_html, table_html). page.py registers and renders them."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..analysis.sae import agreement_summary
from ..analysis.summary import split_curves
from ..store import Run
from . import data
from .figures import MAX_MEMBER_LINES, MAX_PANELS, curve_figure, llc_figure, norm_figure, sharpness_figure
from .figures_components import components_figure
from .figures_effects import effects_figure
from .figures_examples import cartography_figure, onset_histogram, raster_figure
from .figures_fourier import fourier_figure
from .figures_language import onset_figure, strategy_figure, structure_figure, uas_figure
from .figures_maps import map_figure
from .figures_rules import counting_figure, piece_share_figure, rule_figure, share_figure, signature_figure
from .figures_sae import agreement_figure, sae_training_figure
from .figures_scaling import effective_epochs_figure, loss_data_figure
from .figures_seeds import phase_figure, seed_stats_figure, solutions_figure, variance_figure

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MAX_CARTOGRAPHY_POINTS = 20_000
MAX_TABLE_ROWS = 200  # rows of an HTML table; the rest are counted, not shown


@dataclass
class Section:
    """One titled part of the page: an intro line and HTML blocks (tables, figures)."""

    key: str
    title: str
    intro: str = ""
    blocks: list[str] = field(default_factory=list)


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A figure as a div (id fig-`div_id`) and its newPlot script; plotly.js is inlined once in the page head."""
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{div_id}", config=PLOT_CONFIG)
    return f'<div class="figure">{body}</div>'


def table_html(frame: pd.DataFrame, *, classes: str = "", row_classes: list[str] | None = None) -> str:
    """An escaped HTML table of `frame` (at most MAX_TABLE_ROWS rows; the rest counted below it)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, row in enumerate(frame.head(MAX_TABLE_ROWS).itertuples(index=False)):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>")
    more = f'<p class="muted">{len(frame) - MAX_TABLE_ROWS} more rows not shown</p>' \
        if len(frame) > MAX_TABLE_ROWS else ""
    return f'<table class="{classes}"><tr>{head}</tr>{"".join(rows)}</table>{more}'


def glance_section(run: Run, summary: pd.DataFrame) -> Section:
    """Spec, meta, member status counts and the per-member summary table (diverged rows marked)."""
    meta = run.meta
    members = run.members()
    counts = members.status.value_counts()
    status = ", ".join(f"{counts[s]} {s}" for s in ("ok", "running", "diverged") if s in counts)
    rows = _spec_rows(run.spec) if run.has_spec else _producer_rows(run.producer)
    rows.append(("members", f"{len(members)}: {status}"))
    finished = meta.get("finished")
    versions = f"ontogeny {meta.get('ontogeny', '?')}, torch {meta.get('torch', '?')}"
    if run.has_spec:
        rows.append(("trained", f"{meta.get('started', '?')} to {finished or 'still running (or stopped)'} on "
                                f"{meta.get('device', '?')} in {run.spec.precision}, {versions}"))
    else:
        rows.append(("recorded", f"since {meta.get('created', '?')} on {meta.get('host', '?')}, {versions}"))
    spec_table = "<table class='spec'>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
    diverged = members[members.status == "diverged"]
    intro = f"{len(members)} members ({status})."
    if len(diverged):
        intro += " Diverged (loss NaN/inf, frozen): " + ", ".join(
            f"member {m} at step {s}" for m, s in zip(diverged.member, diverged.diverged_step)) + "."
    marks = ["diverged" if s == "diverged" else "" for s in summary.status]
    caption = ("<p class='muted'>Per member: memorization / generalization = first checkpoint step where train / "
               "test accuracy reached 99%; '-' never.</p>")
    return Section("glance", "The run at a glance", intro,
                   [spec_table, caption, table_html(summary, row_classes=marks)])


def _spec_rows(spec) -> list[tuple[str, object]]:
    rows = [("name", spec.name), ("description", spec.description), ("source", spec.source),
            ("differs", spec.differs), ("steps", spec.steps), ("seeds (init)", list(spec.seeds)),
            ("data orders", list(spec.data_orders)),
            ("sweep", "; ".join(f"{k} = {list(v)}" for k, v in spec.sweep) or "none")]
    for section in ("task", "model", "optim", "record"):
        values = spec.to_dict()[section]
        rows.append((section, ", ".join(f"{k}={v}" for k, v in values.items())))
    return rows


def _producer_rows(producer: dict) -> list[tuple[str, object]]:
    """A run not made from a spec: who made it and with what (a user's loop, a checkpoint suite)."""
    return [("made by", producer.get("kind", "?")), *((k, v) for k, v in producer.items() if k != "kind")]


def curves_section(run: Run, names: list[str], configs: pd.Series) -> Section | None:
    """Each split's accuracy and loss per member with the seed band and detected transitions."""
    wanted = split_curves(names)
    if not wanted:
        return None
    # only the members whose own lines are drawn are read; the bands come from every member, inside DuckDB
    frame, n_steps = data.curves(run, wanted, members=data.drawn_members(configs, MAX_MEMBER_LINES))
    frame["config"] = frame.member.map(configs)
    spread = data.grid_spread(run, wanted, configs, np.unique(frame.step))
    transitions = run.table("transitions") if "transitions" in run.tables() else None
    note = "band: min-max over the seeds of each grid point"
    if transitions is not None:
        note += "; triangles: transition onsets (ontogeny analyze)"
    if n_steps > data.MAX_CURVE_STEPS:
        note += f"; downsampled: {data.MAX_CURVE_STEPS} of {n_steps} checkpoints, evenly in log step"
    blocks = [figure_html(curve_figure(frame, spread, metric, configs, transitions, note), f"curves-{metric}")
              for metric in ("acc", "loss") if any(n.endswith(metric) for n in wanted)]
    return Section("curves", "Training curves", "Each member's curves of every split on a log-step axis.", blocks)


def hidden_section(run: Run, summary: pd.DataFrame) -> Section | None:
    """The onset-sorted raster of one member beside its aggregate curve, and the onset histogram."""
    if summary.empty or not data.has_rows(run, "examples"):
        return None
    ok = summary[summary.status != "diverged"]
    member = int(ok.member.iloc[0] if len(ok) else summary.member.iloc[0])
    split = data.example_splits(run)[0]
    subsets = run.subsets()
    if split in set(subsets.split):
        raster = data.subset_raster(run, member, split)
        onsets, source = data.subset_onsets(run, split)
        onsets = onsets.assign(split=split)
        noun = "subsets"
    else:
        raster = data.example_raster(run, member, split)
        onsets, source = data.example_onsets(run)
        noun = "examples"
    blocks = [figure_html(raster_figure(raster), "hidden-raster"),
              figure_html(onset_histogram(onsets, noun, source), "hidden-onsets")]
    if "hidden_transitions" in run.tables():
        blocks.append("<p class='muted'>Onset spread per member (ontogeny analyze): a smooth aggregate "
                      "(aggregate_width) over sharp parts (median_width) is a hidden transition.</p>")
        blocks.append(table_html(run.table("hidden_transitions")))
    intro = (f"Per-{raster.level} curves of one member: each row turns from white (wrong) to blue (correct) at "
             "its own step, while the aggregate above them looks smooth.")
    return Section("hidden", "Hidden transitions", intro, blocks)


def phase_section(run: Run, summary: pd.DataFrame) -> Section | None:
    """Share of seeds that generalize and the median delay over the sweep, with the data threshold marked."""
    keys = data.sweep_keys(run)
    if not keys or "test/acc" not in data.scalar_names(run):  # e.g. an SAE run's grid has no generalization
        return None
    keys.sort(key=lambda k: k != "task.train_fraction")
    phase = data.phase_table(run, summary)
    threshold = pd.DataFrame(columns=["config", "estimate", "ci_low", "ci_high"])
    if "seed_stats" in run.tables() and keys[0] == "task.train_fraction":
        stats = run.table("seed_stats")
        threshold = stats[stats.quantity == "data_threshold"]
    return Section("phase", "Grokking phase diagram", "Which grid points generalize, and how late.",
                   [figure_html(phase_figure(phase, keys, threshold), "phase")])


def seeds_section(run: Run, summary: pd.DataFrame) -> Section | None:
    """CIs of the headline quantities, the variance decomposition and the solution clusters (analysis tables)."""
    tables = {name: run.table(name) for name in ("seed_stats", "variance", "solutions") if name in run.tables()}
    blocks = []
    if "seed_stats" in tables and np.isfinite(tables["seed_stats"].estimate.to_numpy(float)).any():
        blocks.append(figure_html(seed_stats_figure(tables["seed_stats"]), "seed-stats"))
    if "variance" in tables and len(tables["variance"]):
        blocks.append(figure_html(variance_figure(tables["variance"]), "variance"))
    if "solutions" in tables and len(tables["solutions"]):
        blocks.append(figure_html(solutions_figure(tables["solutions"], summary), "solutions"))
    if not blocks:
        return None
    return Section("seeds", "Seed statistics", "How much the outcome depends on the seeds (ontogeny analyze).",
                   blocks)


def maps_section(run: Run) -> Section | None:
    """The training map of each grid point (tables maps, map_states, map_transitions)."""
    if not {"maps", "map_states", "map_transitions"} <= set(run.tables()):
        return None
    maps, states, transitions = (run.table(name) for name in ("maps", "map_states", "map_transitions"))
    blocks = [figure_html(map_figure(maps, states, transitions, config), f"map-{i}")
              for i, config in enumerate(list(dict.fromkeys(maps.config))[:MAX_PANELS])]
    return Section("maps", "Training map", "Latent states shared by all seeds (a Gaussian HMM over the recorded "
                   "metrics, Hu et al. 2023), each member's path through them, and detours.", blocks)


def language_section(run: Run, names: list[str]) -> Section | None:
    """Strategy distances with their stages, the parse per head, and the parse / minimal-pair onsets."""
    if not any(name.startswith(("kl/", "uas/")) for name in names):
        return None
    wanted = [name for name in names if name.startswith(("kl/", "uas/")) or name in ("test/loss", "pairs/acc")]
    scalars, tables = run.scalars(name=wanted), set(run.tables())
    stages = run.table("language_stage_summary") if "language_stage_summary" in tables else None
    onsets = run.table("language_onsets") if "language_onsets" in tables else None
    figures = [(strategy_figure(scalars, stages), "language-strategies"), (uas_figure(scalars), "language-uas"),
               (structure_figure(scalars), "language-structure"), (onset_figure(scalars, onsets), "language-onsets")]
    blocks = [figure_html(fig, key) for fig, key in figures if fig is not None]
    if stages is not None:
        blocks.append(table_html(stages))
    if not blocks:
        return None
    return Section("language", "Language: strategies, parse and agreement", "Which reference predictor each member "
                   "predicts like over training (stages shaded), which heads attend along the gold dependencies, and "
                   "whether the parse comes before agreement (ontogeny analyze).", blocks)


def rules_section(run: Run, names: list[str], configs: pd.Series) -> Section | None:
    """Which rule each question-formation member learned, and letter counting per subset and tokenizer (tables of
    the `rules`, `signature` and `counting` steps)."""
    tables = set(run.tables())
    if "rule/hierarchical" not in names and "counting_summary" not in tables:
        return None
    blocks = []
    if "rule/hierarchical" in names:
        per_member = run.table("rule_members") if "rule_members" in tables else None
        summary = run.table("rule_summary") if "rule_summary" in tables else None
        signature = run.table("rule_signature") if "rule_signature" in tables else None
        shares = run.scalars(name=["rule/hierarchical", "rule_depth1/hierarchical"])
        figures = [(rule_figure(shares, per_member, configs), "rules-over-training"),
                   (share_figure(summary), "rules-share"), (signature_figure(signature), "rules-signature"),
                   (signature_figure(signature, "transfer_accuracy"), "rules-signature-transfer")]
        blocks += [figure_html(fig, key) for fig, key in figures if fig is not None]
        blocks += [table_html(run.table(name)) for name in ("rule_summary", "rule_contrasts", "rule_pairs")
                   if name in tables]
    if "counting_summary" in tables:
        summary = run.table("counting_summary")
        blocks.append(figure_html(counting_figure(summary), "counting"))
        shares = piece_share_figure(summary)
        if shares is not None:
            blocks.append(figure_html(shares, "counting-piece-share"))
        blocks.append(table_html(summary))
    if not blocks:
        return None
    return Section("rules", "Which rule did it learn?", "Question formation and tense reinflection: the share of "
                   "generalization items that follow the hierarchical rule (front the main-clause auxiliary, read on "
                   "McCoy et al.'s questions with one subject relative clause where recorded; make the main verb "
                   "agree with its subject) per member over training, the seeds labelled hierarchical "
                   "per grid point, and whether an in-distribution probe predicts the rule; letter counting: "
                   "accuracy per subset and tokenizer (ontogeny analyze; the probe with --what signature).", blocks)


def experiments_section(run: Run) -> Section | None:
    """Controlled experiments inside one run: data-intervention arms against the baseline (`interventions`)."""
    tables, blocks = set(run.tables()), []
    if "interventions" in tables:
        table = run.table("interventions")
        blocks += [figure_html(fig, f"interventions-{at}") for at in ("final", "onset")
                   if (fig := effects_figure(table, at)) is not None]
        shown = table[(table.low > 0) | (table.high < 0)]
        blocks.append(table_html(shown[["where", "arm", "metric", "at", "difference", "low", "high", "p_value",
                                        "verdict"]]))
    if not blocks:
        return None
    return Section("experiments", "Controlled experiments", "Each data intervention (`task.intervention`: drop, "
                   "weight or curriculum of a training subset) against the baseline arm of the same run, paired by "
                   "seed; the table lists the differences whose 95% CI excludes 0 (ontogeny analyze).", blocks)


def sae_section(run: Run) -> Section | None:
    """SAEs across seeds (an `ontogeny sae` run): agreement over thresholds per checkpoint, training curves."""
    tables = set(run.tables())
    if "sae_agreement_curve" not in tables:
        return None
    members = run.members()
    figures = [(agreement_figure(run.table("sae_agreement_curve")), "sae-agreement"),
               (sae_training_figure(run.scalars(name=["sae/fve"]), members), "sae-training")]
    blocks = [f"<p>{html.escape(line)}</p>" for line in agreement_summary(run)]
    blocks += [figure_html(fig, key) for fig, key in figures if fig is not None]
    return Section("sae", "SAE features across seeds", "Sparse autoencoders trained on each model member's "
                   "activations, several seeds each (ontogeny sae): do the seeds find the same latents, on the "
                   "trained model and on the random-init control?", blocks)


def scaling_section(run: Run) -> Section | None:
    """Final test loss over the width x unique-data grid and what an epoch of repeated data is worth (tables of the
    `scaling` step)."""
    tables = set(run.tables())
    if "scaling_points" not in tables:
        return None
    fits = run.table("scaling_fits") if "scaling_fits" in tables else None
    repeats = run.table("scaling_repeats") if "scaling_repeats" in tables else None
    figures = [(loss_data_figure(run.table("scaling_points"), fits), "scaling-loss"),
               (effective_epochs_figure(repeats), "scaling-repeats")]
    blocks = [figure_html(fig, key) for fig, key in figures if fig is not None]
    blocks += [table_html(run.table(name)) for name in ("scaling_fits", "scaling_repeats") if name in tables]
    return Section("scaling", "Scaling axes: width, unique data, repeated epochs", "Every grid point trained for the "
                   "same steps and batch size (same compute): the final test loss against unique examples per width "
                   "with power-law fits, and the fresh data each repeated run is worth (effective epochs D' / n_train "
                   "against epochs trained, with Muennighoff et al. 2023's fit; ontogeny analyze).", blocks)


def dynamics_section(run: Run, names: list[str], configs: pd.Series) -> Section | None:
    """Weight/gradient norm trajectories and the cartography scatter."""
    blocks = []
    norms = [n for n in ("weight_norm", "grad_norm") if n in names]
    if norms:
        frame, n_steps = data.curves(run, norms)
        note = "thin lines: members" + (f"; downsampled: {data.MAX_CURVE_STEPS} of {n_steps} checkpoints"
                                        if n_steps > data.MAX_CURVE_STEPS else "")
        blocks.append(figure_html(norm_figure(frame, configs, note), "norms"))
    if "example_dynamics" in run.tables():
        frame, total = data.cartography(run, MAX_CARTOGRAPHY_POINTS)
        if total:
            blocks.append(figure_html(cartography_figure(frame, total), "cartography"))
    if not blocks:
        return None
    return Section("dynamics", "Norms and cartography", "Weight and gradient norms; which examples are easy, "
                   "ambiguous or hard to learn.", blocks)


def inside_section(run: Run, configs: pd.Series) -> Section | None:
    """What the analyses run on request found inside the models: sharpness, components, Fourier measures."""
    tables, blocks = set(run.tables()), []
    if "sharpness" in tables:
        blocks.append(figure_html(sharpness_figure(run.table("sharpness"), configs), "sharpness"))
    if {"components", "component_roles"} <= tables:
        blocks.append(figure_html(components_figure(run.table("components"), run.table("component_roles")),
                                  "components"))
    if "fourier" in tables:
        blocks.append(figure_html(fourier_figure(run.table("fourier"), configs), "fourier"))
    if "llc" in tables:
        blocks.append(figure_html(llc_figure(run.table("llc"), configs), "llc"))
    if not blocks:
        return None
    return Section("inside", "Inside the models", "Recomputed from the saved weights by the analyses run on request "
                   "(`ontogeny analyze RUN --what sharpness,components,fourier,llc`).", blocks)


def _cell(value) -> str:
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)
