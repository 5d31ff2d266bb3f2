"""Data interventions: a member field that drops, reweights or stages named training subsets.

`task.intervention` is one short text, so a sweep can put every arm of an ablation inside one ensemble:

    ""                               no intervention (the baseline arm)
    "drop task03"                    never train on task03 (several: "drop task03,task07")
    "weight task03 4"                draw task03 4 times as often (0.25: a quarter as often)
    "curriculum task00,task01 500"   steps 0-499 train only on task00, 500-999 only on task01, then on everything

A task that supports it turns the intervention into per-step sampling weights over its training subsets
(`Intervention.weights`); evaluation splits stay whole, so the effect on the dropped subset itself is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIONS = ("drop", "weight", "curriculum")


@dataclass(frozen=True)
class Intervention:
    action: str = ""  # "" (none), "drop", "weight" or "curriculum"
    subsets: tuple[str, ...] = ()
    factor: float = 1.0  # weight: the subsets' sampling weight multiplier
    stage_steps: int = 0  # curriculum: steps per subset

    def weights(self, step: int, names: list[str]) -> torch.Tensor | None:
        """Sampling weight multipliers [len(names)] float64 at `step`, or None where the intervention changes
        nothing (so an untouched member draws exactly as without the field)."""
        chosen = torch.tensor([name in self.subsets for name in names])
        if self.action == "drop":
            return (~chosen).double()
        if self.action == "weight":
            return torch.where(chosen, self.factor, 1.0).double()
        if self.action == "curriculum" and step < self.stage_steps * len(self.subsets):
            current = self.subsets[step // self.stage_steps]
            return torch.tensor([name == current for name in names], dtype=torch.float64)
        return None


def parse_intervention(text: str, names: list[str]) -> Intervention:
    """Parse `task.intervention` against the task's training subsets `names`; ValueError (one line, without the
    text itself, which the spec check adds) otherwise."""
    parts = text.split()
    if not parts:
        return Intervention()
    action = parts[0]
    expected = {"drop": 2, "weight": 3, "curriculum": 3}
    if action not in expected:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if len(parts) != expected[action]:
        usage = {"drop": "drop SUBSET[,SUBSET]", "weight": "weight SUBSET[,SUBSET] FACTOR",
                 "curriculum": "curriculum SUBSET[,SUBSET] STEPS_PER_SUBSET"}[action]
        raise ValueError(f"expected {usage!r}")
    subsets = tuple(parts[1].split(","))
    unknown = [s for s in subsets if s not in names]
    if unknown:
        raise ValueError(f"unknown subset {unknown[0]!r} (known: {_known(names)})")
    if action == "drop":
        if len(set(subsets)) == len(names):
            raise ValueError("drops every subset, nothing is left to train on")
        return Intervention(action, subsets)
    try:
        number = float(parts[2]) if action == "weight" else int(parts[2])
    except ValueError:
        raise ValueError(f"{parts[2]!r} is not a {'number' if action == 'weight' else 'whole number'}") \
            from None
    if action == "weight":
        if not 0 < number < float("inf"):
            raise ValueError("the factor must be positive and finite (to remove a subset, drop it)")
        return Intervention(action, subsets, factor=number)
    if number < 1:
        raise ValueError("steps per subset must be at least 1")
    return Intervention(action, subsets, stage_steps=number)


def _known(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{names[0]}..{names[-1]}"
