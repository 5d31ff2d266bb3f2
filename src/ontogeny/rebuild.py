"""A run's members as models again: each ensemble rebuilt from the spec, with a checkpoint's saved weights loaded.

The one place that turns a run directory back into models, below both training and analysis: sharpness,
components, Fourier measures, the rule signature and the SAE run all read their models through it. Weights are one
safetensors file per member and checkpoint (written by `save_member_weights`, listed in the `checkpoints` table);
step 0 needs no file, since the init seeds rebuild it exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import nn

from .members import Member, ensembles, expand
from .models import make_model
from .store import Layout, Run, write_bytes
from .tasks import make_task


@dataclass
class RebuiltEnsemble:
    """One ensemble of a run: its members, its task (the members' data) and its model, with weights as last loaded."""

    run: Run
    members: list[Member]
    task: object
    model: nn.Module

    @property
    def ids(self) -> list[int]:
        return [m.member for m in self.members]

    def saved_steps(self) -> list[int]:
        """The steps at which every member saved weights (a diverged member, or one still being written, has none)."""
        saved = self.run.checkpoints()
        saved = saved[saved.member.isin(self.ids)]
        counts = saved.groupby("step").member.nunique()
        return sorted(int(step) for step, n in counts.items() if n == len(self.members))

    def load(self, step: int) -> list[torch.Tensor] | None:
        """Put the members' weights at `step` into the model (step 0 without saved files: the init seeds' weights);
        return AdamW's preconditioner saved with them (see `load_member_weights`), or None.

        ValueError (one line) naming the members without weights at `step`."""
        files = self.run.checkpoints()
        files = files[(files.step == step) & files.member.isin(self.ids)].set_index("member").path
        if len(files) == len(self.members):
            return load_member_weights(self.model, [self.run.path / files[member] for member in self.ids])
        if step == 0:
            self.model.load_state_dict(_build(self.members, self.task).state_dict())
            return None
        missing = sorted(set(self.ids) - set(files.index))
        raise ValueError(f"{self.run.path}: members {missing} have no weights saved at step {step}")


def run_ensembles(run: Run, *, device: str | torch.device = "cpu") -> Iterator[RebuiltEnsemble]:
    """Each ensemble of `run` (one made by `ontogeny run`, from its spec) with its model at init, on `device`."""
    spec = _spec(run)
    for group in ensembles(expand(spec)):
        task = make_task([m.spec.task for m in group], [m.data_seed for m in group], spec.record.max_probe_examples)
        yield RebuiltEnsemble(run, group, task, _build(group, task).to(device))


def member_models(run: Run, steps: list[int] | None = None, *,
                  device: str | torch.device = "cpu") -> Iterator[tuple[RebuiltEnsemble, int]]:
    """(ensemble, step) for every ensemble of `run` at each of `steps` (default: every step where all its members
    saved weights), with those weights loaded into `ensemble.model`, which is reused from step to step."""
    for ensemble in run_ensembles(run, device=device):
        for step in ensemble.saved_steps() if steps is None else steps:
            ensemble.load(step)
            yield ensemble, step


def member_model(run: Run, member: int, step: int, *, device: str | torch.device = "cpu") -> nn.Module:
    """Member `member` of `run` at `step` as a plain PyTorch model of its own (`models.plain`: nn.Linear, nn.Embedding,
    nn.LayerNorm), outputs equal to the member's in the ensemble; a transformer has `.as_hooked_transformer()`.

    Only this member's weights are read. ValueError (one line) for a member the run does not have, or a step at
    which it saved no weights."""
    spec = _spec(run)
    found = [m for m in expand(spec) if m.member == member]
    if not found:
        raise ValueError(f"{run.path}: no member {member} (members 0..{len(expand(spec)) - 1})")
    task = make_task([found[0].spec.task], [found[0].data_seed], spec.record.max_probe_examples)
    alone = RebuiltEnsemble(run, found, task, _build(found, task).to(device))
    alone.load(step)
    return alone.model.member_module(0).eval()


def load_member_weights(model: nn.Module, paths: list) -> list[torch.Tensor] | None:
    """Stack each member's saved weights (one safetensors file per member) into the ensemble's parameters; return
    AdamW's preconditioner saved with them, stacked the same way, or None where it was not saved."""
    saved = [load_file(str(path)) for path in paths]
    names = [name for name, _ in model.named_parameters()]
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.stack([weights[name] for weights in saved]))
    if not all(f"preconditioner.{name}" in weights for weights in saved for name in names):
        return None
    device = next(model.parameters()).device
    return [torch.stack([weights[f"preconditioner.{name}"] for weights in saved]).to(device) for name in names]


def save_member_weights(writer, run_dir: Path, member_ids, step: int, params: dict[str, torch.Tensor]) -> None:
    """Write member_ids[i]'s slice params[...][i] as its own safetensors file at `step`, with a `checkpoints` row."""
    rows = {"member": [], "step": [], "path": [], "sha256": []}
    for index, member in enumerate(member_ids):
        relative = Layout.weights(int(member), step)
        path = run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        # Serialized in memory and written by Python, so a full disk is an OSError like any other write.
        data = save({name: p[index].contiguous() for name, p in params.items()})
        write_bytes(path, data)
        rows["member"].append(int(member))
        rows["step"].append(step)
        rows["path"].append(relative.as_posix())
        rows["sha256"].append(hashlib.sha256(data).hexdigest())
    writer.append("checkpoints", rows)


def _spec(run: Run):
    """The spec the run was trained from; ValueError (one line) for a run another producer made."""
    if not run.has_spec:
        raise ValueError(f"{run.path}: made by {run.producer.get('kind', '?')!r}, not `ontogeny run`: its models "
                         "cannot be rebuilt without the spec")
    return run.spec


def _build(group: list[Member], task) -> nn.Module:
    """The ensemble's model at init: the members' own model spec (a sweep's grid point), init seeds and scales."""
    return make_model(group[0].spec.model, task, [m.init_seed for m in group], [m.spec.model.init_scale for m in group])
