"""Which rule did it learn? Question-formation and letter-counting runs from their scalars, and a probe.

Question formation (tasks/questions.py) records per member and checkpoint `rule/hierarchical`, `rule/linear` and
`rule/neither`: the shares of generalization questions whose fronted auxiliary is the main one, the first one, or
neither; `rule_depth1/*` the same on McCoy et al.'s generalization questions (one relative clause on the subject),
which label the members where recorded (`rule_prefix`). From those:
- a label per checkpoint, with the task's own thresholds (rule_score.member_rule: hierarchical if that share is
  >= 0.8, linear if the linear share is >= 0.8, else mixed), the final label and the switch step (the first
  checkpoint from which the label stays the final one to the end);
- stability: over the last third of checkpoints, the std of the hierarchical share and the number of label changes
  (Qin, Saphra & Alvarez-Melis 2025 find the rule can keep flipping late in training);
- per grid point, the share of seeds labelled hierarchical (exact Clopper-Pearson CI) and how the final
  shares spread: a bimodal outcome puts members at both ends and few in the middle band [0.2, 0.8];
- McCoy, Frank & Linzen 2020's point in one table: pairs of members with equal in-distribution accuracy (within a
  point) and different rules.
The signature that predicts the rule from in-distribution data is in signature.py.
Letter counting: accuracy per subset and the gap present_inside_token - present_own_token per tokenizer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..tasks.letters_gen import SHARE_BINS
from ..tasks.rule_score import HIERARCHICAL_LABEL_SHARE, LINEAR_LABEL_SHARE
from .bootstrap import compare, multibootstrap

RULE_PREFIX = "rule/"
DEPTH1_PREFIX = "rule_depth1/"  # the gen questions whose subject has one relative clause (runs from 2026-12-07 on)
HIERARCHICAL, LINEAR = "rule/hierarchical", "rule/linear"
MIDDLE_BAND = (0.2, 0.8)  # a final hierarchical share strictly inside this band is "in the middle"
LATE_FRACTION = 1 / 3  # stability is measured over this last share of the checkpoints
ACCURACY_TOLERANCE = 0.01  # McCoy pairs: in-distribution accuracies within one point count as equal
MEMBER_COLUMNS = ["member", "final_label", "final_hierarchical", "final_linear", "switch_step", "n_label_changes",
                  "late_std", "late_label_changes", "stable", "final_test_acc", "final_gen_acc"]
CONTRAST_COLUMNS = ["config", "baseline", "n_pairs", "difference", "ci_low", "ci_high", "p_value", "share_difference",
                    "only_baseline", "only_config", "labels_p"]
SUMMARY_COLUMNS = ["config", "n_members", "n_hierarchical", "n_linear", "n_mixed", "share_hierarchical", "ci_low",
                   "ci_high", "mean_hierarchical", "mean_low", "mean_high", "n_low", "n_middle", "n_high",
                   "middle_share", "bimodal", "median_late_std", "n_unstable"]
PAIR_COLUMNS = ["member_a", "member_b", "config_a", "config_b", "test_acc_a", "test_acc_b", "label_a", "label_b",
                "hierarchical_a", "hierarchical_b"]
COUNT_SUBSETS = ("absent", "present_inside_token", "present_own_token", "count_1", "count_2", "count_3_plus",
                 *SHARE_BINS, "inside_rare_piece", "inside_common_piece")
GAP = "gap inside - own"  # the `subset` names of the gap rows of `counting_summary`
RARE_GAP = "gap rare - common piece"


def label_of(hierarchical, linear) -> np.ndarray:
    """Labels [N] (object) of shares [N]: the task's thresholds (rule_score.member_rule)."""
    hierarchical, linear = np.asarray(hierarchical, dtype=float), np.asarray(linear, dtype=float)
    return np.where(hierarchical >= HIERARCHICAL_LABEL_SHARE, "hierarchical",
                    np.where(linear >= LINEAR_LABEL_SHARE, "linear", "mixed")).astype(object)


def rule_prefix(names) -> str:
    """The scalars that label members: McCoy et al.'s generalization questions (DEPTH1_PREFIX) where recorded,
    else every gen question (RULE_PREFIX: tense reinflection, and question runs recorded before 2026-12-07, whose
    gen set also holds two nested relative clauses, a depth training never shows)."""
    return DEPTH1_PREFIX if f"{DEPTH1_PREFIX}hierarchical" in set(names) else RULE_PREFIX


def rule_curves(scalars: pd.DataFrame, prefix: str = RULE_PREFIX) -> pd.DataFrame:
    """Per member and checkpoint (sorted): member, step, hierarchical, linear, label, from `prefix`hierarchical and
    `prefix`linear (`rule_depth1/`: the gen questions with one subject relative clause). ValueError (one line) when
    either is not recorded."""
    hierarchical, linear = f"{prefix}hierarchical", f"{prefix}linear"
    absent = [name for name in (hierarchical, linear) if name not in set(scalars["name"].unique())]
    if absent:
        raise ValueError(f"no {' and '.join(absent)} recorded: rule labels need a question_formation run")
    rows = scalars[scalars["name"].isin([hierarchical, linear])]
    wide = rows.pivot_table(index=["member", "step"], columns="name", values="value", aggfunc="last")
    wide = wide.dropna().reset_index().rename(columns={hierarchical: "hierarchical", linear: "linear"})
    wide.columns.name = None
    wide["label"] = label_of(wide["hierarchical"], wide["linear"])
    return wide[["member", "step", "hierarchical", "linear", "label"]].sort_values(["member", "step"],
                                                                                   ignore_index=True)


def rule_members(scalars: pd.DataFrame, *, late_fraction: float = LATE_FRACTION,
                 prefix: str = RULE_PREFIX) -> pd.DataFrame:
    """One row per member (MEMBER_COLUMNS): the final label and shares; switch_step, the first checkpoint from which
    the label is the final one at every later checkpoint; n_label_changes over training; over the last
    `late_fraction` of its checkpoints (at least 2), late_std (std of the hierarchical share) and
    late_label_changes; stable (no late label change); final test/acc and gen/acc (NaN if not recorded)."""
    if not 0 < late_fraction <= 1:
        raise ValueError(f"late_fraction must be in (0, 1], got {late_fraction}")
    curves = rule_curves(scalars, prefix)
    final = {}
    for name in ("test/acc", "gen/acc"):
        rows = scalars[scalars["name"] == name].sort_values("step")
        final[name] = rows.groupby("member")["value"].last()
    records = []
    for member, rows in curves.groupby("member", sort=True):
        labels, steps, shares = rows["label"].to_numpy(), rows["step"].to_numpy(), rows["hierarchical"].to_numpy()
        changed = labels[1:] != labels[:-1]  # [S - 1]
        differs = np.flatnonzero(labels != labels[-1])
        switch = steps[differs[-1] + 1] if len(differs) else steps[0]
        late = max(2, int(np.ceil(late_fraction * len(labels))))
        late_changes = int(changed[-(late - 1):].sum()) if len(labels) > 1 else 0
        records.append({"member": member, "final_label": labels[-1], "final_hierarchical": shares[-1],
                        "final_linear": rows["linear"].iloc[-1], "switch_step": float(switch),
                        "n_label_changes": int(changed.sum()), "late_std": float(np.std(shares[-late:])),
                        "late_label_changes": late_changes, "stable": late_changes == 0,
                        "final_test_acc": final["test/acc"].get(member, np.nan),
                        "final_gen_acc": final["gen/acc"].get(member, np.nan)})
    return pd.DataFrame(records, columns=MEMBER_COLUMNS)


def rule_summary(per_member: pd.DataFrame, members: pd.DataFrame | None = None, *, n_boot: int = 2000,
                 ci: float = 0.95, random_state=None) -> pd.DataFrame:
    """Per grid point (`members`' `config` column; its member-field columns such as `task.complexity` carried
    along), SUMMARY_COLUMNS: label counts; share_hierarchical with its exact (Clopper-Pearson) CI over seeds, NaN
    with one seed (a bootstrap of 0/1 labels puts 0 of 8 at [0, 0]; the exact interval is [0, 0.37]);
    mean_hierarchical, the mean final hierarchical share, with its Multi-Bootstrap CI (the labels' threshold at 0.8
    parts shares that differ by little; the mean does not); n_low / n_middle / n_high members with a final hierarchical
    share below, inside or above MIDDLE_BAND; bimodal: members at both ends and at most a quarter in the middle; the
    median late_std and how many members changed label late. `members` None: `per_member` already carries them."""
    table = per_member if members is None else per_member.merge(members, on="member", how="inner")
    carried = [c for c in ("task.complexity", "task.diversity", "task.disambiguating", "task.subject_rc")
               if c in table]
    records = []
    for config, rows in table.groupby("config", sort=False):
        hierarchical = (rows["final_label"] == "hierarchical").to_numpy(dtype=float)
        shares = rows["final_hierarchical"].to_numpy(dtype=float)
        low = high = mean_low = mean_high = np.nan
        if len(rows) >= 2:
            low, high = stats.binomtest(int(hierarchical.sum()), len(rows)).proportion_ci(ci, method="exact")
            interval = multibootstrap(shares, n_boot=n_boot, ci=ci, random_state=random_state)
            mean_low, mean_high = interval.low, interval.high
        n_low, n_high = int((shares <= MIDDLE_BAND[0]).sum()), int((shares >= MIDDLE_BAND[1]).sum())
        n_middle = len(shares) - n_low - n_high
        records.append({"config": config, **{c: rows[c].iloc[0] for c in carried}, "n_members": len(rows),
                        **{f"n_{label}": int((rows["final_label"] == label).sum())
                           for label in ("hierarchical", "linear", "mixed")},
                        "share_hierarchical": float(hierarchical.mean()), "ci_low": low, "ci_high": high,
                        "mean_hierarchical": float(shares.mean()), "mean_low": mean_low, "mean_high": mean_high,
                        "n_low": n_low, "n_middle": n_middle, "n_high": n_high,
                        "middle_share": n_middle / len(shares),
                        "bimodal": bool(n_low and n_high and n_middle <= len(shares) / 4),
                        "median_late_std": float(rows["late_std"].median()),
                        "n_unstable": int((~rows["stable"].astype(bool)).sum())})
    return pd.DataFrame(records, columns=[SUMMARY_COLUMNS[0], *carried, *SUMMARY_COLUMNS[1:]])


def rule_contrasts(per_member: pd.DataFrame, members: pd.DataFrame | None = None, *, n_boot: int = 2000,
                   ci: float = 0.95, random_state=None) -> pd.DataFrame:
    """Each grid point against the first (`members`' config order), CONTRAST_COLUMNS, over the seeds both share,
    paired by init seed (and data seed); no row where fewer than 2 seeds pair.
    - difference: in mean final hierarchical share, with its Multi-Bootstrap CI and two-sided p (bootstrap.compare);
    - share_difference: in the share of seeds labelled hierarchical; only_baseline / only_config count the seeds
      hierarchical on one side alone, and labels_p is McNemar's exact test on them (two-sided binomial, p = 1/2),
      exact at any seed count, where a bootstrap of a few 0/1 labels collapses to a point when all agree.
    `members` None: `per_member` already carries `config` and the seeds (members pooled from several runs)."""
    table = per_member if members is None else per_member.merge(members, on="member", how="inner")
    seeds = [c for c in ("init_seed", "data_seed") if c in table]
    if not seeds or table["config"].nunique() < 2:
        return pd.DataFrame(columns=CONTRAST_COLUMNS)
    table = table.assign(hierarchical=(table["final_label"] == "hierarchical").astype(float))
    wide = table.pivot_table(index=seeds, columns="config", values=["final_hierarchical", "hierarchical"],
                             aggfunc="first")
    baseline, *others = list(dict.fromkeys(table["config"]))
    records = []
    for config in others:
        shares = wide["final_hierarchical"][[baseline, config]].dropna()
        if len(shares) < 2:
            continue
        result = compare(shares[baseline].to_numpy(), shares[config].to_numpy(), paired=True, n_boot=n_boot, ci=ci,
                         random_state=random_state)
        labels = wide["hierarchical"].loc[shares.index, [baseline, config]]
        only_baseline = int(((labels[baseline] == 1) & (labels[config] == 0)).sum())
        only_config = int(((labels[config] == 1) & (labels[baseline] == 0)).sum())
        discordant = only_baseline + only_config
        labels_p = stats.binomtest(only_config, discordant).pvalue if discordant else 1.0
        records.append({"config": config, "baseline": baseline, "n_pairs": len(shares),
                        "difference": result.difference, "ci_low": result.low, "ci_high": result.high,
                        "p_value": result.p_value, "share_difference": (only_config - only_baseline) / len(shares),
                        "only_baseline": only_baseline, "only_config": only_config, "labels_p": float(labels_p)})
    return pd.DataFrame(records, columns=CONTRAST_COLUMNS)


def pooled_rule_members(paths) -> pd.DataFrame:
    """The `rule_members` of several analysed runs (one recipe, different seeds) joined to their members, renumbered
    0..N-1, with `config` naming each grid point and `scalars` the reading: the input of rule_summary and
    rule_contrasts with members=None."""
    from ..store import open_run
    from .summary import grid_labels

    tables = []
    for path in paths:
        with open_run(path) as run:
            members = run.members()
            read = run.table("rule_summary").get("scalars", pd.Series([RULE_PREFIX + "*"])).iloc[0]
            tables.append(run.table("rule_members").merge(members, on="member").assign(scalars=read))
    pooled = pd.concat(tables, ignore_index=True).assign(member=lambda t: range(len(t)))
    pooled["config"] = grid_labels(pooled[members.columns])
    return pooled


def rule_pairs(per_member: pd.DataFrame, members: pd.DataFrame | None = None, *,
               tolerance: float = ACCURACY_TOLERANCE) -> pd.DataFrame:
    """McCoy-style pairs (PAIR_COLUMNS): every two members whose final test/acc differ by at most `tolerance`
    and whose final labels differ, the most accurate pairs first; config from `members` when given."""
    table = per_member.dropna(subset=["final_test_acc"]).sort_values("member", ignore_index=True)
    configs = (members.set_index("member")["config"] if members is not None and "config" in members
               else pd.Series(dtype=object))
    accuracy, labels = table["final_test_acc"].to_numpy(dtype=float), table["final_label"].to_numpy()
    a, b = np.triu_indices(len(table), k=1)
    keep = (np.abs(accuracy[a] - accuracy[b]) <= tolerance + 1e-12) & (labels[a] != labels[b])
    a, b = a[keep], b[keep]
    ids = table["member"].to_numpy()
    pairs = pd.DataFrame({"member_a": ids[a], "member_b": ids[b],
                          "config_a": [configs.get(m, "") for m in ids[a]],
                          "config_b": [configs.get(m, "") for m in ids[b]],
                          "test_acc_a": accuracy[a], "test_acc_b": accuracy[b], "label_a": labels[a],
                          "label_b": labels[b], "hierarchical_a": table["final_hierarchical"].to_numpy()[a],
                          "hierarchical_b": table["final_hierarchical"].to_numpy()[b]}, columns=PAIR_COLUMNS)
    order = np.argsort(-(pairs["test_acc_a"] + pairs["test_acc_b"]).to_numpy(), kind="stable")
    return pairs.iloc[order].reset_index(drop=True)


# ---- letter counting ------------------------------------------------------------------------------------------


def counting_summary(scalars: pd.DataFrame, members: pd.DataFrame, *, split: str = "test", n_boot: int = 2000,
                     ci: float = 0.95, random_state=None) -> pd.DataFrame:
    """Per grid point (`members`' config, with `task.vocab_size` and `task.tokenizer` carried where present) and
    subset of `split`: the mean final accuracy over seeds with its Multi-Bootstrap CI (NaN with one seed), plus the
    rows `GAP` (per member present_inside_token minus present_own_token accuracy) and `RARE_GAP` (inside_rare_piece
    minus inside_common_piece: a piece under or over 1e-3 of training prompts), averaged (paired: the CI resamples
    members' gaps). A subset no member of a grid point has (e.g. inside a piece, under a one-letter-per-piece
    tokenizer) is left out. Columns: config, [carried], subset, n_members, mean, ci_low, ci_high."""
    final = scalars[scalars["step"] == scalars.groupby("member")["step"].transform("max")]
    names = {f"{split}/{subset}/acc": subset for subset in COUNT_SUBSETS} | {f"{split}/acc": "all"}
    wide = final[final["name"].isin(names)].pivot_table(index="member", columns="name", values="value")
    wide = wide.rename(columns=names)
    carried = [c for c in ("task.tokenizer", "task.vocab_size") if c in members]
    records = []
    for config, group in members.groupby("config", sort=False):
        rows = wide.reindex(group["member"])
        values = {subset: rows[subset].dropna().to_numpy() for subset in ("all", *COUNT_SUBSETS) if subset in rows}
        for gap, (a, b) in {GAP: ("present_inside_token", "present_own_token"),
                            RARE_GAP: ("inside_rare_piece", "inside_common_piece")}.items():
            if {a, b} <= set(rows):
                values[gap] = (rows[a] - rows[b]).dropna().to_numpy()
        for subset, seeds in values.items():
            if not len(seeds):
                continue
            low = high = np.nan
            if len(seeds) >= 2:
                interval = multibootstrap(seeds, n_boot=n_boot, ci=ci, random_state=random_state)
                low, high = interval.low, interval.high
            records.append({"config": config, **{c: group[c].iloc[0] for c in carried}, "subset": subset,
                            "n_members": len(seeds), "mean": float(seeds.mean()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(records, columns=["config", *carried, "subset", "n_members", "mean", "ci_low", "ci_high"])
