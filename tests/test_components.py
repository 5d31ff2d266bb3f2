"""Component ontogeny: ablation importance, class selectivity and roles, checked against ablations done by hand."""

import numpy as np
import pandas as pd
import pytest
import torch

import ontogeny as og
from ontogeny import MLPSpec
from ontogeny.analysis.components import (class_selectivity, early_selectivity_vs_final_loss, unit_importance,
                                          unit_roles)
from ontogeny.models import EnsembleMLP
from ontogeny.report import render_report


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_importance_equals_the_loss_rise_of_ablating_each_unit_by_hand(ablation):
    model = EnsembleMLP(MLPSpec(width=6, activation="square"), n_outputs=4, init_seeds=[0, 1], vocab_size=5,
                        n_positions=2)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 5, (30, 2), generator=gen), torch.randint(0, 4, (30,), generator=gen)
    half = torch.arange(30) < 15
    member_mask = torch.stack([half, ~half])  # [M, N]: each member its own examples
    found = unit_importance(model, x, y, "cross_entropy", {"all": torch.ones(30, dtype=torch.bool),
                                                           "own": member_mask}, ablation)
    with torch.no_grad():
        h = model.read(x, ["hidden"])["hidden"]
        for unit in range(6):
            ablated = h.clone()
            ablated[..., unit] = h[..., unit].mean(1, keepdim=True) if ablation == "mean" else 0
            for name, mask in (("all", torch.ones(2, 30, dtype=torch.bool)), ("own", member_mask)):
                for m in range(2):
                    before = torch.nn.functional.cross_entropy(model(x)[m][mask[m]], y[mask[m]])
                    after = torch.nn.functional.cross_entropy((ablated[m] @ model.w_out[m])[mask[m]], y[mask[m]])
                    torch.testing.assert_close(found[name][m, unit], after - before, atol=1e-5, rtol=1e-4)


def test_class_selectivity_index_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    h = torch.tensor([[0.0, 0, 4, 4, 0, 0],    # only class 1: index 1
                      [1.0, 1, 1, 1, 1, 1],    # the same for every class: 0
                      [3.0, 3, 1, 1, 2, 2]]).T[None]  # means 3, 1, 2: (3 - 1.5) / (3 + 1.5) = 1/3
    torch.testing.assert_close(class_selectivity(h, labels), torch.tensor([[1.0, 0.0, 1 / 3]]))


def test_roles_scaffold_late_specialist_and_neither():
    steps = [0, 100, 200, 300, 400]
    curves = {0: [0.0, 0.5, 0.3, 0.1, 0.05],   # peaks at 100, ends at 10% of it: scaffold
              1: [0.0, 0.0, 0.01, 0.2, 0.4],   # below 25% of its end through step 200, ends at its peak
              2: [0.1, 0.1, 0.1, 0.1, 0.1],    # flat: neither
              3: [0.0, 1e-4, 2e-4, 1e-4, 0.0]}  # never matters (< 1e-3 nats): neither
    frame = pd.DataFrame([{"member": 0, "unit": u, "step": s, "importance": v}
                          for u, values in curves.items() for s, v in zip(steps, values)])
    roles = unit_roles(frame).set_index("unit")
    assert list(roles.role) == ["scaffold", "late specialist", "", ""]
    assert roles.loc[0, "peak_step"] == 100 and roles.loc[0, "final"] == pytest.approx(0.05)


def test_early_selectivity_correlation_with_a_bootstrap_ci():
    selectivity = pd.DataFrame({"member": np.repeat(np.arange(8), 2), "step": np.tile([0, 10], 8),
                                "unit": 0, "selectivity": np.repeat(np.arange(8.0), 2)})
    final = pd.Series(np.arange(8.0) ** 2, index=np.arange(8))  # monotone in selectivity: rho 1
    found = early_selectivity_vs_final_loss(selectivity, final)
    assert found["step"] == 10 and found["rho"] == pytest.approx(1.0) and found["low"] > 0.5 and found["n"] == 8
    assert early_selectivity_vs_final_loss(selectivity[selectivity.member < 4], final) is None  # too few members


TINY = ["task.p=13", "task.train_fraction=0.5", "model.width=12", "steps=60", "record.every=20", "seeds=5"]


def test_components_step_end_to_end_and_its_one_line_refusals(tmp_path):
    run = og.run("grokking", overrides=[*TINY, "record.weights_every=20"], out=tmp_path / "run")
    found = og.analysis.analyze(run, what=["components"])
    table = og.open(run.path).table("components")
    assert set(table.group) == {"train", "test"} and set(table.step) == {0, 20, 40, 60}
    assert len(table) == 5 * 4 * 12 * 2 and table.importance.notna().all()
    roles = og.open(run.path).table("component_roles")
    assert len(roles) == 5 * 12 and set(roles.role) <= {"", "scaffold", "late specialist"}
    assert len(og.open(run.path).table("component_selectivity")) == 5 * 4 * 12
    assert any(line.startswith("components [all]: 12 units x 4 checkpoints") for line in found.summary)
    assert any(line.startswith("early selectivity") for line in found.summary)
    assert 'id="fig-components"' in render_report(og.open(run.path))
    bare = og.run("grokking", overrides=TINY, out=tmp_path / "bare")
    assert any("record.weights_every" in line for line in og.analysis.analyze(bare, what=["components"]).summary)


def test_transformer_heads_and_neurons_equal_ablating_their_weights_by_hand():
    """Zeroing a head's output at the read position = zeroing its rows of W_O (one layer, last position read);
    zeroing a ReLU neuron = zeroing its column of W_in and its bias."""
    from ontogeny import TransformerSpec
    from ontogeny.analysis.components import component_importance
    from ontogeny.models import EnsembleTransformer

    spec = TransformerSpec(d_model=8, n_heads=2, d_mlp=6)
    model = EnsembleTransformer(spec, vocab_size=6, n_positions=3, n_outputs=5, init_seeds=[0, 1])
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randint(0, 6, (20, 3), generator=gen), torch.randint(0, 5, (20,), generator=gen)
    everything = {"all": torch.ones(20, dtype=torch.bool)}
    found, (kind, layer, hidden) = component_importance(model, x, y, "cross_entropy", everything, "zero", rows=7)
    (_, _, heads), (_, _, neurons) = found
    assert hidden.shape == (2, 20, 6) and (kind, layer) == ("neuron", 0)
    assert not model.hooked and not any(site.active for site in model.sites())

    def loss():
        return torch.stack([torch.nn.functional.cross_entropy(logits, y) for logits in model(x)])

    block = model.blocks[0]
    with torch.no_grad():
        before = loss()
        for head in range(2):
            saved = block.W_O.clone()
            block.W_O[:, head * 4:(head + 1) * 4] = 0
            torch.testing.assert_close(heads["all"][:, head], loss() - before, atol=1e-5, rtol=1e-4)
            block.W_O.copy_(saved)
        for neuron in range(6):
            saved_w, saved_b = block.W_in.clone(), block.b_in.clone()
            block.W_in[:, :, neuron], block.b_in[:, neuron] = 0, 0
            torch.testing.assert_close(neurons["all"][:, neuron], loss() - before, atol=1e-5, rtol=1e-4)
            block.W_in.copy_(saved_w)
            block.b_in.copy_(saved_b)


def test_components_step_on_a_transformer_run(tmp_path):
    nanda = ["task.p=11", "task.train_fraction=0.5", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32",
             "steps=40", "record.every=20", "record.weights_every=20", "seeds=2"]
    run = og.run("grokking-nanda", overrides=nanda, out=tmp_path / "nanda")
    found = og.analysis.analyze(run, what=["components"])
    table = og.open(run.path).table("components")
    assert table.groupby("kind").unit.nunique().to_dict() == {"head": 2, "neuron": 32}
    assert any(line.startswith("components [all]: 2 heads, 32 neurons x 3 checkpoints") for line in found.summary)


def test_hinge_importance_equals_ablating_each_unit_by_hand():
    """The one-output (sparse parity) path of the readout ablation."""
    model = EnsembleMLP(MLPSpec(width=6), n_outputs=1, init_seeds=[0, 1], n_inputs=4)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=gen), torch.randint(0, 2, (20,), generator=gen).float() * 2 - 1
    found = unit_importance(model, x, y, "hinge", {"all": torch.ones(20, dtype=torch.bool)}, "mean")["all"]
    with torch.no_grad():
        h = model.read(x, ["hidden"])["hidden"]
        before = torch.relu(1 - model(x)[..., 0] * y).mean(1)
        for unit in range(6):
            ablated = h.clone()
            ablated[..., unit] = h[..., unit].mean(1, keepdim=True)
            out = torch.bmm(ablated, model.w_out)[..., 0] + model.b_out
            torch.testing.assert_close(found[:, unit], torch.relu(1 - out * y).mean(1) - before, atol=1e-6, rtol=1e-5)
