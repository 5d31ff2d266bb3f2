"""Which rule a model follows on the generalization items of question formation and tense reinflection:
per item, whether its output follows the hierarchical rule, the linear one or neither; per member, the shares and a
label."""

from __future__ import annotations

import numpy as np

RULES = ("hierarchical", "linear", "neither")
HIERARCHICAL_LABEL_SHARE = 0.8  # a member is "hierarchical" if at least this share of its gen answers are
LINEAR_LABEL_SHARE = 0.8  # ... and "linear" likewise; otherwise "mixed"


def rule_scores(first_output: np.ndarray, main_aux: np.ndarray, first_aux: np.ndarray) -> np.ndarray:
    """Return, per item, the rule that a model's first output token follows [N] str: "hierarchical" (it is the
    main auxiliary), "linear" (the first auxiliary) or "neither". Where main_aux == first_aux the rules agree and
    the item counts as "hierarchical": score gen items, where they always differ."""
    first_output, main_aux, first_aux = (np.asarray(a) for a in (first_output, main_aux, first_aux))
    if not first_output.shape == main_aux.shape == first_aux.shape or first_output.ndim != 1:
        raise ValueError(f"need three arrays of one shape [N] (got {first_output.shape}, {main_aux.shape}, "
                         f"{first_aux.shape})")
    return np.where(first_output == main_aux, "hierarchical",
                    np.where(first_output == first_aux, "linear", "neither")).astype(object)


def member_rule(scores: np.ndarray) -> dict:
    """Return {"hierarchical", "linear", "neither": shares of the items, "label": "hierarchical" if that share is
    >= HIERARCHICAL_LABEL_SHARE (0.8), "linear" if the linear share is >= LINEAR_LABEL_SHARE (0.8), else "mixed"}."""
    scores = np.asarray(scores)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"need a non-empty [N] array of rule names (got shape {scores.shape})")
    unknown = set(scores.tolist()) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule names {sorted(unknown)}; known: {', '.join(RULES)}")
    shares = {rule: float(np.mean(scores == rule)) for rule in RULES}
    label = ("hierarchical" if shares["hierarchical"] >= HIERARCHICAL_LABEL_SHARE
             else "linear" if shares["linear"] >= LINEAR_LABEL_SHARE else "mixed")
    return shares | {"label": label}
