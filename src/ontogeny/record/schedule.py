"""When to record: log-spaced early (where dynamics are fast), linear later, as Pythia's checkpoints."""

from __future__ import annotations

from ..spec import Record


def checkpoint_steps(record: Record, total_steps: int) -> list[int]:
    """Return sorted checkpoint steps: 0, then `per_octave` log-spaced steps per doubling below `every`,
    then every multiple of `every`, and always the last step `total_steps`."""
    steps = {0, total_steps}
    i = 0
    while (step := round(2 ** (i / record.per_octave))) < min(record.every, total_steps):
        steps.add(step)
        i += 1
    steps.update(range(record.every, total_steps, record.every))
    return sorted(steps)


def weight_steps(record: Record, checkpoints: list[int]) -> set[int]:
    """Checkpoint steps at which weights are saved: multiples of `weights_every` and the last step."""
    every = record.weights_every
    return {s for s in checkpoints if every and s % every == 0} | {checkpoints[-1]}
