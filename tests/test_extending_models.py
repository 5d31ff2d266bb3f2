"""A model defined in one file (here, this test) that declares its hook sites gets every analysis that needs only
those sites: it trains, and components and SAEs run on it with no change anywhere else."""

from dataclasses import dataclass

import pytest
import torch

import ontogeny as og
from ontogeny.analysis.components import run_components
from ontogeny.models.layers import fan_in_std, init_generators, member_normal
from ontogeny.models.sites import HookedEnsemble, Site
from ontogeny.sae import train_run_saes
from ontogeny.spec import MODELS, Check, ModelSpec, Sizes


# --8<-- [start:model]
class EnsembleGatedMLP(HookedEnsemble):
    """M gated MLPs on float features: units = relu(x @ W_a) * (x @ W_b), logits = units @ W_out.

    Sites: `gate` [member, batch, feature] relu(x @ W_a); `units` [member, batch, feature] the gated units.
    """

    default_site = "units"

    def __init__(self, spec, n_inputs: int, n_outputs: int, init_seeds: list[int], init_scales=None):
        super().__init__()
        scales = torch.as_tensor(init_scales or [spec.init_scale] * len(init_seeds), dtype=torch.float32)
        generators = init_generators(init_seeds)
        self.W_a = member_normal(generators, (n_inputs, spec.width), fan_in_std(n_inputs, scales))  # [M, n, W]
        self.W_b = member_normal(generators, (n_inputs, spec.width), fan_in_std(n_inputs, scales))  # [M, n, W]
        self.W_out = member_normal(generators, (spec.width, n_outputs), fan_in_std(spec.width, scales))  # [M, W, C]
        rows = ("member", "batch", "feature")
        self.site_gate, self.site_units = Site("gate", rows, 0), Site("units", rows, 0)
        self._declare_sites([self.site_gate, self.site_units], {}, {})

    def forward(self, x):
        x = x.expand(self.W_a.shape[0], *x.shape[-2:])  # [M, B, n]
        units = self.site_units(self.site_gate(torch.relu(x @ self.W_a)) * (x @ self.W_b))  # [M, B, W]
        return units @ self.W_out  # [M, B, C]

    def readout_units(self):
        return "units", "unit", self.W_out


@MODELS.register("gated_mlp")
@dataclass(frozen=True)
class GatedMLPModel(ModelSpec):
    name: str = "gated_mlp"
    width: int = 16

    def check(self, check: Check, sizes: Sizes) -> None:
        check(sizes.vocab_size is None, "model.name", "the gated MLP reads float features")

    def memory(self, sizes: Sizes) -> tuple[int, int]:
        return (2 * sizes.n_inputs + sizes.n_outputs) * self.width, 3 * self.width

    def build(self, task, init_seeds, init_scales=None):
        return EnsembleGatedMLP(self, task.n_inputs, task.n_outputs, init_seeds, init_scales)
# --8<-- [end:model]


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory):
    overrides = {"model.name": "gated_mlp", "task.n": 10, "task.k": 2, "steps": 60, "seeds": 2, "record.every": 30,
                 "record.weights_every": 30}
    return og.run("sparse-parity", overrides=overrides, out=tmp_path_factory.mktemp("gated") / "run")


def test_components_read_a_new_models_sites(gated_run):
    importance, selectivity = run_components(gated_run)
    assert set(importance.kind) == {"unit"} and importance.unit.nunique() == 16
    assert set(importance.step) == {0, 30, 60} and importance.importance.notna().all()
    assert len(selectivity) == 2 * 3 * 16  # members x checkpoints x units


def test_an_sae_trains_on_a_new_models_site(gated_run, tmp_path):
    run = train_run_saes(gated_run, tmp_path / "sae", seeds=2, steps=20, width=32, k=4, control=False)
    members = run.members()
    assert len(members) == 2 * 2 and set(members.source_step) == {60}
    fve = run.scalars(name="sae/fve").groupby("member").value.last()
    assert fve.notna().all() and (fve > -1).all()
    with pytest.raises(ValueError, match="--site 'resid': no such site in this gated_mlp .sites: gate, units"):
        train_run_saes(gated_run, tmp_path / "other", site="resid", seeds=2, steps=5, control=False)
