"""A Hugging Face `Trainer` callback that records the model into an ontogeny run (`pip install ontogeny[hf]`).

```python
trainer = Trainer(model, args, train_dataset=data,
                  callbacks=[OntogenyCallback("runs/mine", member={"seed": args.seed}, probes={"test": probe})])
```

At every scheduled `global_step` (the number of optimizer updates done) the model is evaluated on the probe sets;
every `on_log` number becomes a scalar named as Transformers' own tracker callbacks name it (their `rewrite_logs`:
`eval_loss` -> `eval/loss`, `test_loss` -> `test/loss`, `loss` -> `train/loss`); every checkpoint save commits the rows, and a Trainer resumed
from a checkpoint continues the member from that checkpoint's step, so the run has no duplicates.

The one naming rule of ontogeny's producers: a name you chose (`og.Recorder.log`, Lightning's `self.log`) is kept as
you wrote it; a name a framework chose (the Trainer's logs) is put in the `split/metric` form ontogeny's own runs use.
"""

from __future__ import annotations

import warnings
from typing import Any

try:
    from transformers import TrainerCallback
    from transformers.integrations.integration_utils import rewrite_logs
except ImportError as err:  # pragma: no cover (the extra is installed wherever this module is used)
    raise ImportError("ontogeny.integrations.hf needs Hugging Face transformers: pip install 'ontogeny[hf]'") from err

from ..recorder import Recorder


class OntogenyCallback(TrainerCallback):
    """Records one member (this training run) of the ontogeny run `run_dir`; arguments as `og.Recorder`."""

    def __init__(self, run_dir, member: dict[str, Any], probes: dict[str, Any] | None = None, **recorder_options):
        for taken in ("train", "eval"):
            if taken in (probes or {}):
                raise ValueError(f"probes: a probe set named {taken!r} would write {taken}/loss, which the Trainer's "
                                 f"logs already are here; name it e.g. '{taken}_probe'")
        self.run_dir, self.member, self.probes, self.options = run_dir, member, probes, recorder_options
        self.recorder: Recorder | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        resumed = state.global_step > 0  # resumed from a checkpoint: its rows through global_step stand
        self.recorder = Recorder(self.run_dir, self.member, self.probes, resume_step=state.global_step if resumed
                                 else None, **self.options)
        if not resumed:
            self.recorder.step(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.recorder is not None:
            self.recorder.step(state.global_step, model)
            if control.should_save:  # the Trainer saves right after this: commit first, so a kill between loses nothing
                self.recorder.commit(step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is not None and logs:
            numbers = {k: float(v) for k, v in rewrite_logs(logs).items()
                       if isinstance(v, int | float) and not isinstance(v, bool)}
            taken = sorted(self.recorder.probe_metrics.intersection(numbers))
            if taken:  # e.g. test/loss from trainer.evaluate(metric_key_prefix="test") beside a probe set `test`
                warnings.warn(f"not recording the Trainer's {', '.join(taken)}: a probe set writes that name",
                              stacklevel=2)
            self.recorder.log(state.global_step, {k: v for k, v in numbers.items() if k not in taken})

    def on_save(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.commit(step=state.global_step)  # the checkpoint being saved covers every row so far

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
