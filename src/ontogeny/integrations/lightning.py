"""A PyTorch Lightning callback that records the module into an ontogeny run (`pip install ontogeny[lightning]`).

```python
trainer = lightning.Trainer(max_steps=1000, callbacks=[OntogenyCallback("runs/mine", member={"seed": 3},
                                                                        probes={"test": (x_test, y_test)})])
```

At every scheduled `global_step` (optimizer updates done) the module is evaluated on the probe sets (its
`forward` gives the logits); the numbers in `trainer.callback_metrics` become scalars; saving a checkpoint commits
the rows, and a fit resumed from a checkpoint continues the member from that checkpoint's step.
"""

from __future__ import annotations

import warnings

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError as err:  # pragma: no cover (the extra is installed wherever this module is used)
    raise ImportError("ontogeny.integrations.lightning needs Lightning: pip install 'ontogeny[lightning]'") from err

from ..recorder import Recorder


class OntogenyCallback(Callback):
    """Records one member (this fit) of the ontogeny run `run_dir`; arguments as `og.Recorder`."""

    def __init__(self, run_dir, member: dict[str, Any], probes: dict[str, Any] | None = None, **recorder_options):
        self.run_dir, self.member, self.probes, self.options = run_dir, member, probes, recorder_options
        self.recorder: Recorder | None = None
        self._warned = False

    def on_train_start(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        resumed = trainer.global_step > 0
        self.recorder = Recorder(self.run_dir, self.member, self.probes,
                                 resume_step=trainer.global_step if resumed else None, **self.options)
        if not resumed:
            self.recorder.step(0, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.recorder is None:
            return
        step = trainer.global_step
        numbers = {name: float(value) for name, value in trainer.callback_metrics.items()
                   if getattr(value, "numel", lambda: 0)() == 1}
        taken = self.recorder.probe_metrics.intersection(numbers)
        if taken:  # the probe set's own value is recorded under that name; say once that the logged one is not
            if not self._warned:
                warnings.warn(f"ontogeny: not recording the logged {', '.join(sorted(taken))}: a probe set writes "
                              "that name; log it under another", stacklevel=2)
                self._warned = True
            numbers = {name: value for name, value in numbers.items() if name not in taken}
        if numbers:
            self.recorder.log(step, numbers)
        self.recorder.step(step, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.recorder is not None:
            self.recorder.commit(step=trainer.global_step)

    def on_train_end(self, trainer, pl_module):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
