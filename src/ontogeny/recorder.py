"""Record a training loop you wrote yourself: one process per member, all recording into one run.

```python
rec = og.Recorder("runs/mine", member={"seed": 3, "lr": 3e-4}, probes={"test": (x_test, y_test)})
for step, batch in enumerate(loader):
    ...                                        # your forward / backward / optimizer step
    rec.log(step, {"train/loss": loss.item()})  # any scalars, any time
    rec.step(step, model)                      # at scheduled steps: per-example losses on every probe set
rec.close()
```

Each Recorder is one member with the settings you give, writing through its own writer (`member-00003`), so
processes never touch each other's files. Rows are committed at every evaluation, every `commit_seconds` and by
`commit()`; call `commit()` when you save your own checkpoint, and after a restart reopen with `resume_step=` the last
step whose rows your checkpoint covers: the member's rows after it are dropped and your loop records them again, so
the run ends with no duplicates and no gaps. A `resume_step` past what the commits covered (a checkpoint saved
without a commit) is refused, naming the lost steps, unless `accept_gap=True`. `trackers=["tensorboard"]` (or
"mlflow", "wandb") sends this member's committed curves to a tracker while the loop runs, beside the run
(integrations/trackers.py).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .exceptions import StoreError
from .probe_sets import LossFunction, ProbeSet, causal_lm, cross_entropy, subset_rows
from .evaluation.evaluate import Evaluator, Probe, scalar_rows
from .evaluation.schedule import LogSpaced, log_spaced
from .store import Run, claim_member, join_run, member_row, members_frame

CONFIG_COLUMN = "recorder.config"  # the member's settings as canonical JSON: how a restarted process finds itself


class Recorder:
    """Records one member of a run from a training loop of your own (see the module docstring)."""

    def __init__(self, run_dir: str | Path, member: dict[str, Any], probes: dict[str, Any] | None = None, *,
                 every: LogSpaced | Sequence[int] | None = None, loss: LossFunction | None = None,
                 chance_loss: float | None = None, loss_kind: str | None = None, resume_step: int | None = None,
                 accept_gap: bool = False, commit_seconds: float = 30.0, examples: bool = True,
                 trackers: Sequence[str] = ()):
        config = _config(member)
        if trackers:  # before the member is claimed: a tracker that cannot receive rows leaves nothing behind
            from .integrations.trackers import check_trackers

            check_trackers(trackers)
        # for age of acquisition (the chance-level loss) and cartography (whether exp(-loss) is a probability)
        self.loss_columns = {"chance_loss": chance_loss,
                             "loss_kind": loss_kind or ("cross_entropy" if loss is None else None)}
        self.every = every if every is not None else log_spaced()
        self.loss, self.examples, self.commit_seconds = loss, examples, commit_seconds
        self.probes = {name: p if isinstance(p, ProbeSet) else ProbeSet(p, name=name)
                       for name, p in (probes or {}).items()}
        for name, probe in self.probes.items():
            probe.name = name
        self.layout = join_run(run_dir, {"kind": "recorder", "probes": {n: len(p.ids) for n, p in
                                                                          self.probes.items()}})
        self._check_probes()
        self.member_id, self.writer = claim_member(  # its own id again after a restart, a new one otherwise
            self.layout.root, json.dumps(config, sort_keys=True),
            lambda member: self._members_row(config, "running", member), column=CONFIG_COLUMN,
            wanted=config.get("member"))
        self._finished = False
        if resume_step is None and self.writer.has_rows():
            self.writer.close()
            raise StoreError(f"{self.layout.root}: member {self.member_id} ({json.dumps(config, sort_keys=True)}) "
                             "already has rows; to continue it from your checkpoint pass resume_step=STEP (its rows "
                             "after STEP are dropped), or record into another run")
        self._through = self.writer.committed_info.get("through")  # the last step its commits covered
        if resume_step is not None:
            if not accept_gap:
                self._check_no_gap(resume_step)
            for table in ("scalars", "examples", "checkpoints"):
                self.writer.drop(table, after=resume_step)
            self._through = resume_step
        self.writer.put("members", self._members_row(config, "running"))
        self.writer.put("subsets", subset_rows([(n, p.ids, p.subsets) for n, p in self.probes.items()]))
        tokens = [p.token_table for p in self.probes.values() if p.token_table is not None]
        if tokens:
            self.writer.put("tokens", pd.concat(tokens, ignore_index=True))
        self.commit()
        self._evaluator: Evaluator | None = None
        self._followers = self._follow(trackers)

    @property
    def member(self) -> int:
        """This member's id in the run."""
        return self.member_id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Record scalars (name -> number) at `step`; a name a probe set writes itself (`train/loss` beside a probe
        set `train`) is refused: the run would hold two values for one curve at one step."""
        taken = sorted(self.probe_metrics.intersection(scalars))
        if taken:
            raise ValueError(f"log: {', '.join(taken)} is written by the probe set of that name at every scheduled "
                             "step; log it under another name (e.g. 'train_batch/loss')")
        scalar_rows(self.writer, [self.member_id], int(step), {name: float(value) for name, value in scalars.items()})
        self._saw(step)
        self._commit_if_due()

    def step(self, step: int, model: nn.Module, *, force: bool = False) -> bool:
        """At a scheduled step (or with `force`): evaluate `model` on every probe set and commit. Returns whether it
        evaluated."""
        self._saw(step)  # the loop has reached it, evaluated here or not
        if not force and step not in self.every:
            return False
        was_training = model.training
        model.eval()
        try:
            scalars = self._evaluator_for(model).evaluate(int(step), model)
        except (RuntimeError, IndexError) as err:  # x of another width, a class past the model's outputs...
            raise StoreError(f"step {step}: the model could not score the probe sets ({str(err).splitlines()[0]}); "
                             "check x's shape and that every class in y is below the model's number of outputs"
                             ) from err
        finally:
            model.train(was_training)
        scalar_rows(self.writer, [self.member_id], int(step), scalars)
        self.commit()
        return True

    def commit(self, step: int | None = None) -> None:
        """Make every row recorded so far durable; call it when you save your own checkpoint, with that checkpoint's
        `step`, so that a restart from it (`resume_step=`) can tell that nothing between was lost."""
        if step is not None:
            self._saw(step)
        self.writer.commit(info={"through": self._through})
        self._last_commit = time.monotonic()

    @functools.cached_property
    def probe_metrics(self) -> frozenset[str]:
        """The scalar names the probe sets write: split/loss and split/acc, and the same per named subset (worked out
        once: `log` checks every call against it)."""
        names = set()
        for name, probe in self.probes.items():
            for prefix in (name, *(f"{name}/{subset}" for subset in probe.subsets)):
                names.update((f"{prefix}/loss", f"{prefix}/acc"))
        return frozenset(names)

    def _saw(self, step: int) -> None:
        self._through = int(step) if self._through is None else max(self._through, int(step))

    def _check_no_gap(self, resume_step: int) -> None:
        """StoreError if the loop restarts from a step later than this member's commits covered: the rows it recorded
        in between are gone (a checkpoint saved without a commit), so its history would have a silent hole."""
        if self._through is None or resume_step <= self._through:
            return
        lost = [s for s in range(self._through + 1, resume_step + 1) if s in self.every][:5]
        self.writer.close()
        raise StoreError(f"{self.layout.root}: member {self.member_id} has rows committed through step "
                         f"{self._through}, but resumes at step {resume_step}: what it recorded in between is lost"
                         f"{f' (evaluations at steps {lost}...)' if lost else ''}; call commit(step=) when you save "
                         "a checkpoint, or pass accept_gap=True to go on without those rows")

    def close(self, *, finished: bool = True) -> None:
        """Commit, mark the member `ok` (with `finished`), and release the writer."""
        if self._finished:
            return
        self._finished = True
        try:
            if finished:
                self.writer.put("members", self._members_row(None, "ok"))
            self.commit()
        finally:
            self.writer.close()
            for follower in self._followers:
                follower.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, *exc_info: object) -> None:
        self.close(finished=exc_type is None)

    def open(self) -> Run:
        """The run, for reading."""
        return Run(self.layout.root)

    # ---- helpers ----

    def _follow(self, trackers: Sequence[str]) -> list:
        """This member's tracker followers (other processes send their own members)."""
        if not trackers:
            return []
        from .integrations.trackers import Follower

        try:
            return [Follower(self.layout.root, to, members=[self.member_id]).start() for to in trackers]
        except BaseException:
            self.writer.close()
            raise

    def _evaluator_for(self, model: nn.Module) -> Evaluator:
        if self._evaluator is None:
            device = next(iter(model.parameters()), torch.empty(0)).device
            probes = [Probe(name, p.ids, p.batches(device), None, {k: v.to(device) for k, v in p.subsets.items()},
                            adapter=_single(p.loss or self.loss or (causal_lm if p.kind == "tokens" else cross_entropy)))
                      for name, p in self.probes.items()]
            self._evaluator = Evaluator(self.writer, [self.member_id], probes, examples=self.examples)
        return self._evaluator

    def _commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def _members_row(self, config: dict[str, Any] | None, status: str, member_id: int | None = None) -> pd.DataFrame:
        if config is None:
            config = json.loads(self._config_text)
        self._config_text = json.dumps(config, sort_keys=True)
        member_id = self.member_id if member_id is None else member_id
        settings = {k: v for k, v in config.items() if k not in ("member", "init_seed", "data_seed")}
        seed = config.get("init_seed", config.get("seed"))
        row = member_row(member_id, status, init_seed=_int(seed), data_seed=_int(config.get("data_seed")),
                         **self.loss_columns, **settings, **{CONFIG_COLUMN: self._config_text})
        return members_frame([row])

    def _check_probes(self) -> None:
        recorded = self.layout.read_meta()["producer"].get("probes", {})
        mine = {n: len(p.ids) for n, p in self.probes.items()}
        if recorded != mine:
            raise StoreError(f"{self.layout.root}: this run's members are probed on {recorded} (name: examples); "
                             f"this process gives {mine}")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _single(loss: LossFunction):
    """Adapter of a single model's loss function: (loss [B], correct [B] or None) -> ([1, B], [1, B])."""
    def adapter(model, batch):
        values, correct = loss(model, batch)
        if correct is None:
            correct = torch.zeros_like(values, dtype=torch.bool)
        return values.reshape(1, -1), correct.reshape(1, -1)
    return adapter


# Members-table columns the recorder writes itself: a setting of the same name would overwrite them (a "status" of
# "ok" would make a crashed process look finished).
RESERVED = frozenset({"ensemble", "status", "diverged_step", "loss_kind", "chance_loss", "source", CONFIG_COLUMN})


def _config(member: dict[str, Any]) -> dict[str, Any]:
    """The member's settings, checked: a dict of names to JSON scalars (str, int, finite float, bool)."""
    if not isinstance(member, dict) or not member:
        raise StoreError(f"member must be a non-empty dict of settings, e.g. {{'seed': 3, 'lr': 3e-4}} (got {member!r})")
    clean = {}
    for key, value in member.items():
        if isinstance(value, np.generic):
            value = value.item()
        ok = isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))
        if not isinstance(key, str) or not ok:
            raise StoreError(f"member[{key!r}] = {value!r}: settings must be strings, integers, booleans or finite "
                             "numbers")
        clean[key] = value
    reserved = sorted(set(clean) & RESERVED)
    if reserved:
        raise StoreError(f"member[{reserved[0]!r}]: a column the recorder sets itself (reserved: "
                         f"{', '.join(sorted(RESERVED))}); name the setting otherwise")
    if "member" in clean and (not isinstance(clean["member"], int) or clean["member"] < 0):
        raise StoreError(f"member['member'] = {clean['member']!r}: a member id is an integer >= 0")
    return clean
