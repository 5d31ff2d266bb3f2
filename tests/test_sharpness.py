"""Sharpness: per-member top Hessian eigenvalues by power iteration, checked against autograd's full Hessian."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

import ontogeny as og
from ontogeny import MLPSpec
from ontogeny.analysis.sharpness import top_eigenvalues
from ontogeny.models import EnsembleMLP
from ontogeny.report import render_report
from test_optim import plain_mlp


def plain_top_eigenvalue(module: nn.Module, loss_of_output, scale: torch.Tensor | None = None) -> float:
    """Largest eigenvalue of the full Hessian H of a plain module's loss (torch.autograd.functional.hessian), or
    of D H D for a diagonal D given as `scale` [n_params]."""
    names = [name for name, _ in module.named_parameters()]
    shapes = [p.shape for p in module.parameters()]
    flat = torch.cat([p.detach().flatten() for p in module.parameters()])

    def loss(vector):
        parts, start = {}, 0
        for name, shape in zip(names, shapes):
            parts[name], start = vector[start:start + shape.numel()].view(shape), start + shape.numel()
        return loss_of_output(functional_call(module, parts, (x_shared,)))

    hessian = torch.autograd.functional.hessian(loss, flat).double()
    if scale is not None:
        hessian = scale.double()[:, None] * hessian * scale.double()[None, :]
    return torch.linalg.eigvalsh(hessian).max().item()


x_shared = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("case", ["relu-hinge", "gelu-cross-entropy"])
def test_top_eigenvalue_of_each_member_matches_its_full_hessian(case):
    gen = torch.Generator().manual_seed(1)
    if case == "relu-hinge":  # the fused ReLU head: its hand-written backward must be twice differentiable
        ensemble = EnsembleMLP(MLPSpec(width=7), n_outputs=1, init_seeds=[0, 1, 2], n_inputs=5)
        y = torch.randint(0, 2, (12,), generator=gen).float() * 2 - 1
        plain = [plain_mlp(ensemble, m) for m in range(3)]

        def loss_of_output(out):
            return torch.relu(1 - out[..., 0] * y).mean(-1)
    else:
        ensemble = EnsembleMLP(MLPSpec(width=7, activation="gelu"), n_outputs=3, init_seeds=[0, 1, 2], n_inputs=5)
        y = torch.randint(0, 3, (12,), generator=gen)
        plain = [plain_mlp(ensemble, m) for m in range(3)]

        def loss_of_output(out):
            if out.dim() == 3:
                return torch.stack([nn.functional.cross_entropy(o, y) for o in out])
            return nn.functional.cross_entropy(out, y)

    values, converged = top_eigenvalues(lambda: loss_of_output(ensemble(x_shared)), list(ensemble.parameters()),
                                        iterations=2000, tol=1e-4)
    assert converged.all()
    expected = [plain_top_eigenvalue(module, loss_of_output) for module in plain]
    torch.testing.assert_close(values, torch.tensor(expected, dtype=torch.float64), rtol=1e-3, atol=1e-6)


def test_preconditioned_top_eigenvalue_is_that_of_d_h_d():
    """Adam's preconditioned sharpness: the top eigenvalue of P^-1 H, i.e. of D H D with D = P^(-1/2)."""
    ensemble = EnsembleMLP(MLPSpec(width=5, activation="gelu"), n_outputs=3, init_seeds=[0, 1], n_inputs=5)
    y = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    scale = [torch.rand(p.shape, generator=gen) + 0.5 for p in ensemble.parameters()]  # [M, ...] each

    def losses():
        return torch.stack([nn.functional.cross_entropy(o, y) for o in ensemble(x_shared)])

    values, converged = top_eigenvalues(losses, list(ensemble.parameters()), iterations=3000, tol=1e-4, scale=scale)
    assert converged.all()
    for m in range(2):
        module = plain_mlp(ensemble, m)
        d = torch.cat([scale[0][m].T.flatten(), scale[1][m], scale[2][m].T.flatten(), scale[3][m]])
        expected = plain_top_eigenvalue(module, lambda out: nn.functional.cross_entropy(out, y), d)
        assert values[m].item() == pytest.approx(expected, rel=1e-3)


def test_hand_written_backwards_are_twice_differentiable():
    from ontogeny.models.layers import member_dot, member_lookup, shared_input_matmul

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradgradcheck(shared_input_matmul, (x, w))
    h = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.randn(2, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda z, v: member_dot(z.clone(), v, relu=True), (h, v))
    table = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    rows = torch.randint(0, 6, (4, 2), generator=gen)
    assert torch.autograd.gradgradcheck(lambda t: member_lookup(t, rows), (table,))


TINY_NANDA = ["task.p=11", "task.train_fraction=0.5", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32",
              "steps=40", "record.every=20", "record.weights_every=20"]


def test_sharpness_step_on_a_transformer_run_member_alone_equals_member_in_ensemble(tmp_path):
    """All members iterate at once on the summed loss: a member's estimate must not depend on its ensemble."""
    big = og.run("grokking-nanda", overrides=[*TINY_NANDA, "seeds=3"], out=tmp_path / "big")
    alone = og.run("grokking-nanda", overrides=[*TINY_NANDA, "seeds=[2]"], out=tmp_path / "alone")
    assert "sharpness" not in og.analysis.analyze(big).tables  # costly: only on request
    found = og.analysis.analyze(big, what=["sharpness"])
    table = og.open(big.path).table("sharpness")
    assert set(table.step) == {0, 20, 40} and len(table) == 9 and table.converged.all()
    assert (table.sharpness > 0).all()
    adam = og.open(big.path).spec.optim  # AdamW: its preconditioner is saved with the weights after step 0
    assert table[table.step == 0].preconditioned_sharpness.isna().all()
    assert (table[table.step > 0].preconditioned_sharpness > 0).all()
    later = table[table.step == 40]
    assert (later.edge == (2 + 2 * adam.betas[0]) / ((1 - adam.betas[0]) * later.lr)).all()
    assert any(line.startswith("sharpness [all]: median top Hessian eigenvalue") for line in found.summary)
    assert 'id="fig-sharpness"' in render_report(og.open(big.path))
    og.analysis.analyze(alone, what=["sharpness"])
    one = og.open(alone.path).table("sharpness").set_index("step").sharpness
    inside = table[table.member == 2].set_index("step").sharpness
    torch.testing.assert_close(torch.tensor(one.to_numpy()), torch.tensor(inside.to_numpy()), rtol=1e-3, atol=1e-6)


def test_sharpness_under_sgd_is_compared_with_two_over_lr_and_needs_saved_weights(tmp_path):
    overrides = ["task.n=10", "task.k=2", "task.n_test=32", "task.batch_size=16", "model.width=8", "steps=40",
                 "record.every=20", "seeds=2", "optim.lr=0.05"]
    run = og.run("sparse-parity", overrides=[*overrides, "record.weights_every=20"], out=tmp_path / "sgd")
    og.analysis.analyze(run, what=["sharpness"])
    table = og.open(run.path).table("sharpness")
    assert (table.edge == 2 / 0.05).all() and (table.lr == 0.05).all()
    assert table.preconditioned_sharpness.isna().all()
    bare = og.run("sparse-parity", overrides=overrides, out=tmp_path / "bare")  # weights at the last step only
    found = og.analysis.analyze(bare, what=["sharpness"])
    assert "sharpness" not in found.tables
    assert any("record.weights_every" in line for line in found.summary)
