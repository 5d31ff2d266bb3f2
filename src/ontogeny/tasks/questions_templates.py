"""Which templates question formation's training may use, given the shares and the diversity knob (the rules are
in questions_gen.py's docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..seeds import stream_seed
from .questions_layout import DEPTH, TEXT

if TYPE_CHECKING:  # only named in hints: questions_gen imports this module
    from .questions_gen import QuestionGrammar

GROUPS = {"plain": DEPTH == 0, "rc": DEPTH == 1, "center": DEPTH == 2, "not-center": DEPTH < 2}
GROUP_WHY = {"plain": "one without subject RC (questions; declaratives with subject_rc < 1)",
              "center": "a center-embedded one (complexity > 0)",
              "rc": "a depth-1 subject-RC one (disambiguating questions or subject_rc > 0, complexity < 1)",
              "not-center": "a non-center one (declaratives, complexity < 1)"}


def _draws(grammar: QuestionGrammar) -> tuple[bool, bool, bool]:
    """Which kinds of training sentence can occur: declaratives, plain questions, disambiguating questions."""
    quest = grammar.quest_share > 0
    return grammar.quest_share < 1, quest and grammar.disambiguating < 1, quest and grammar.disambiguating > 0


def needed_groups(grammar: QuestionGrammar) -> list[str]:
    """Return the template groups that a positive share needs, in the order they are moved to the front."""
    declarative, plain, disambiguating = _draws(grammar)
    chosen = grammar.subject_rc >= 0  # declaratives' subject RCs set by subject_rc (Qin et al.'s knob)
    with_rc = disambiguating or (declarative and (not chosen or grammar.subject_rc > 0))  # may carry a subject RC
    needs = []
    if plain or (declarative and chosen and grammar.subject_rc < 1):
        needs.append("plain")
    if with_rc and grammar.complexity > 0:
        needs.append("center")
    if (disambiguating or (declarative and chosen and grammar.subject_rc > 0)) and grammar.complexity < 1:
        needs.append("rc")
    if declarative and not chosen and grammar.complexity < 1:
        needs.append("not-center")
    return needs


def least_diversity(needs: list[str]) -> int:
    """The fewest templates holding one of each needed group ("not-center" is covered by "plain" or "rc")."""
    return len([g for g in needs if g != "not-center"]) + ("not-center" in needs and not {"plain", "rc"} & set(needs))


def reachable_templates(grammar: QuestionGrammar) -> np.ndarray:
    """Return the indices of the templates the shares let training reach (sorted)."""
    reach = np.zeros(len(TEXT), dtype=bool)
    for group in needed_groups(grammar):
        reach |= GROUPS[group]
    if "not-center" in needed_groups(grammar):
        reach |= GROUPS["plain"] | GROUPS["rc"]  # a declarative's template is uniform over both
    return np.flatnonzero(reach)


def checked(grammar: QuestionGrammar) -> None:
    problems = grammar.check()
    if problems:
        raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))


def training_templates(grammar: QuestionGrammar, seed: int) -> np.ndarray:
    """Return the sorted indices of the templates that the train and test splits of `seed` may use."""
    checked(grammar)
    pool = reachable_templates(grammar)
    if grammar.diversity == 0:
        return pool
    order = list(np.random.default_rng(stream_seed("questions-templates", seed)).permutation(pool))
    front: list[int] = []
    for group in needed_groups(grammar):
        if not any(GROUPS[group][t] for t in front):
            front.append(next(t for t in order if GROUPS[group][t]))
    rest = [t for t in order if t not in front]
    return np.sort(np.array(front + rest, dtype=np.int64)[: grammar.diversity])
