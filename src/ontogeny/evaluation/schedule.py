"""When to record: log-spaced early (where dynamics are fast), linear later, as Pythia's checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import RecordSpec


@dataclass(frozen=True)
class LogSpaced:
    """Step 0, `per_octave` log-spaced steps per doubling below `until`, then every multiple of `then_every`.

    `step in schedule` asks whether a step is recorded; the schedule has no end, so it fits a loop of any length.
    """

    per_octave: int = 4
    until: int = 1000
    then_every: int = 1000

    def __post_init__(self):
        if self.per_octave < 1 or self.until < 0 or self.then_every < 1:
            raise ValueError(f"need per_octave >= 1, until >= 0 and then_every >= 1 (got {self})")

    def __contains__(self, step: object) -> bool:
        if not isinstance(step, int) or step < 0:
            return False
        if step >= self.until:
            return step % self.then_every == 0
        return step == 0 or step in self._early()

    def steps(self, end: int) -> list[int]:
        """The scheduled steps up to and including `end`, sorted."""
        early = [s for s in {0, *self._early()} if s <= end]
        first = -(-self.until // self.then_every) * self.then_every  # the first multiple at or after `until`
        return sorted({*early, *range(first, end + 1, self.then_every)})

    def _early(self) -> set[int]:
        steps, i = set(), 0
        while (step := round(2 ** (i / self.per_octave))) < self.until:
            steps.add(step)
            i += 1
        return steps


def log_spaced(per_octave: int = 4, until: int = 1000, then_every: int = 1000) -> LogSpaced:
    """A recording schedule: log-spaced steps (`per_octave` per doubling) below `until`, then every `then_every`."""
    return LogSpaced(per_octave, until, then_every)


def checkpoint_steps(record: RecordSpec, total_steps: int) -> list[int]:
    """Return sorted checkpoint steps: 0, then `per_octave` log-spaced steps per doubling below `every`,
    then every multiple of `every`, and always the last step `total_steps`."""
    schedule = LogSpaced(record.per_octave, until=min(record.every, total_steps), then_every=record.every)
    return sorted({*schedule.steps(total_steps - 1), total_steps})


def weight_steps(record: RecordSpec, checkpoints: list[int]) -> set[int]:
    """Checkpoint steps at which weights are saved: multiples of `weights_every` and the last step."""
    every = record.weights_every
    return {s for s in checkpoints if every and s % every == 0} | {checkpoints[-1]}
