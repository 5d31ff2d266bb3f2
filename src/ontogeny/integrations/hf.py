"""A Hugging Face `Trainer` callback that records the model into an ontogeny run (`pip install ontogeny[hf]`).

```python
trainer = Trainer(model, args, train_dataset=data,
                  callbacks=[OntogenyCallback("runs/mine", member={"seed": args.seed}, probes={"test": probe})])
```

At every scheduled `global_step` (the number of optimizer updates done) the model is evaluated on the probe sets;
every `on_log` number becomes a `train/<name>` scalar; every checkpoint save commits the rows, and a Trainer resumed
from a checkpoint continues the member from that checkpoint's step, so the run has no duplicates.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover (the extra is installed wherever this module is used)
    raise ImportError("ontogeny.integrations.hf needs Hugging Face transformers: pip install 'ontogeny[hf]'") from err

from ..recorder import Recorder


class OntogenyCallback(TrainerCallback):
    """Records one member (this training run) of the ontogeny run `run_dir`; arguments as `og.Recorder`."""

    def __init__(self, run_dir, member: dict[str, Any], probes: dict[str, Any] | None = None, **recorder_options):
        if "train" in (probes or {}):
            raise ValueError("probes: a probe set named 'train' would write train/loss, which the Trainer's logs "
                             "already are here; name it e.g. 'train_probe'")
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
            numbers = {f"train/{k}": float(v) for k, v in logs.items()
                       if isinstance(v, int | float) and not isinstance(v, bool)}
            self.recorder.log(state.global_step, numbers)

    def on_save(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.commit(step=state.global_step)  # the checkpoint being saved covers every row so far

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
