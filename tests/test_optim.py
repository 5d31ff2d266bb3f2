"""The ensemble optimizer against torch.optim on M separate plain modules (reference check)."""

import pytest
import torch
from torch import nn

from ontogeny import MLPSpec, OptimSpec
from ontogeny.models import EnsembleMLP
from ontogeny.train.optim import EnsembleOptimizer


def plain_mlp(ensemble: EnsembleMLP, m: int) -> nn.Sequential:
    """Member m of an ensemble MLP on float inputs (biased, ReLU or GELU, any depth) as a plain nn.Sequential."""
    pairs = [(ensemble.w_in, ensemble.b_in), *zip(ensemble.hidden, ensemble.hidden_bias),
             (ensemble.w_out, ensemble.b_out)]
    activation = {"relu": nn.ReLU, "gelu": nn.GELU}[ensemble.spec.activation]
    layers = []
    for w, b in pairs:
        layer = nn.Linear(w.shape[1], w.shape[2])
        with torch.no_grad():
            layer.weight.copy_(w[m].T)
            layer.bias.copy_(b[m])
        layers += [layer, activation()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_ensemble_matches_separate_torch_optimizers(name, fused):
    seeds, lrs, decays = [0, 1, 2], [1e-2, 3e-3, 1e-3], [0.0, 0.1, 1.0]
    spec = OptimSpec(name=name, betas=(0.9, 0.98), momentum=0.9)
    ensemble = EnsembleMLP(MLPSpec(width=16), n_outputs=3, init_seeds=seeds, n_inputs=5)
    plains = [plain_mlp(ensemble, m) for m in range(3)]
    optimizer = EnsembleOptimizer(list(ensemble.parameters()), spec, lr=lrs, weight_decay=decays, fused=fused)
    if name == "adamw":
        refs = [torch.optim.AdamW(p.parameters(), lr=lr, weight_decay=wd, betas=(0.9, 0.98), foreach=False)
                for p, lr, wd in zip(plains, lrs, decays)]
    else:
        refs = [torch.optim.SGD(p.parameters(), lr=lr, weight_decay=wd, momentum=0.9, foreach=False)
                for p, lr, wd in zip(plains, lrs, decays)]
    data = torch.Generator().manual_seed(0)
    for _ in range(50):
        x, y = torch.randn(32, 5, generator=data), torch.randint(0, 3, (32,), generator=data)
        optimizer.zero_grad()
        logits = ensemble(x)  # [M, B, C]
        losses = torch.stack([nn.functional.cross_entropy(logits[m], y) for m in range(3)])
        losses.sum().backward()
        optimizer.step()
        for plain, ref in zip(plains, refs):
            ref.zero_grad()
            nn.functional.cross_entropy(plain(x), y).backward()
            ref.step()
    for m, plain in enumerate(plains):
        torch.testing.assert_close(ensemble.w_in[m].T, plain[0].weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ensemble.w_out[m].T, plain[2].weight, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ensemble.b_out[m], plain[2].bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [False, True])
def test_per_member_clipping_matches_clip_grad_norm(fused):
    ensemble = EnsembleMLP(MLPSpec(width=8), n_outputs=2, init_seeds=[3, 4], n_inputs=4)
    plains = [plain_mlp(ensemble, m) for m in range(2)]
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    logits = ensemble(x)
    sum(nn.functional.cross_entropy(logits[m], y) for m in range(2)).backward()
    optimizer = EnsembleOptimizer(list(ensemble.parameters()), OptimSpec(name="sgd"), lr=[1.0, 1.0],
                                  weight_decay=[0.0, 0.0], fused=fused)
    before = ensemble.w_in.detach().clone()
    max_norm = torch.tensor([0.01, 0.0])  # member 1: no clipping
    norms = optimizer.grad_norms()
    optimizer.clip(max_norm, norms)
    optimizer.step()  # plain SGD at lr 1: the weights move by exactly the clipped gradient
    for m, plain in enumerate(plains):
        nn.functional.cross_entropy(plain(x), y).backward()
        total = nn.utils.clip_grad_norm_(plain.parameters(), 0.01 if m == 0 else float("inf"))
        torch.testing.assert_close(norms[m], total, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close((before - ensemble.w_in.detach())[m].T, plain[0].weight.grad, rtol=1e-5,
                                   atol=1e-7)


@pytest.mark.parametrize("fused", [False, True])
def test_frozen_member_keeps_its_exact_values_and_others_are_untouched(fused):
    ensemble = EnsembleMLP(MLPSpec(width=8), n_outputs=2, init_seeds=[0, 1], n_inputs=4)
    twin = EnsembleMLP(MLPSpec(width=8), n_outputs=2, init_seeds=[0], n_inputs=4)
    opt = EnsembleOptimizer(list(ensemble.parameters()), OptimSpec(), lr=[1e-2, 1e-2], weight_decay=[0.1, 0.1],
                            fused=fused)
    twin_opt = EnsembleOptimizer(list(twin.parameters()), OptimSpec(), lr=[1e-2], weight_decay=[0.1], fused=fused)
    frozen = ensemble.w_in[1].detach().clone()
    x = torch.randn(8, 4)
    for _ in range(5):
        for model, optimizer, active in ((ensemble, opt, torch.tensor([True, False])), (twin, twin_opt, None)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            if model is ensemble:
                model.w_in.grad[1] = float("nan")  # a diverged member's gradient
            optimizer.step(active=active)
    assert torch.equal(ensemble.w_in[1], frozen)
    assert torch.equal(ensemble.w_in[0], twin.w_in[0])


def test_lr_schedule():
    spec = OptimSpec(warmup_steps=10, schedule="cosine")
    assert spec.lr_factor(0, 110) == pytest.approx(0.1)
    assert spec.lr_factor(10, 110) == pytest.approx(1.0)
    assert spec.lr_factor(60, 110) == pytest.approx(0.5)
    assert OptimSpec(schedule="linear").lr_factor(75, 100) == pytest.approx(0.25)


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += not func.is_view  # views launch nothing
        return func(*args, **(kwargs or {}))


def update_ops(depth: int, name: str) -> int:
    """Operations one clipped update of an MLP of `depth` layers runs (with a frozen member)."""
    ensemble = EnsembleMLP(MLPSpec(width=8, depth=depth), n_outputs=2, init_seeds=[0, 1], n_inputs=4)
    optimizer = EnsembleOptimizer(list(ensemble.parameters()), OptimSpec(name=name, momentum=0.9), lr=[1e-2, 1e-2],
                                  weight_decay=[0.1, 0.1], fused=True)
    ensemble(torch.randn(8, 4)).square().sum().backward()
    with _CountOps() as counter:
        optimizer.clip(torch.tensor([1.0, 1.0]), optimizer.grad_norms())
        optimizer.step(active=torch.tensor([True, False]))
    return counter.count


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_an_update_runs_the_same_operations_however_many_parameter_tensors(name):
    """What bounds a small model's step on a GPU is launches: the fused update (a GPU's) works on one [M, P] buffer."""
    assert update_ops(2, name) == update_ops(8, name)  # 6 and 18 parameter tensors


@pytest.mark.parametrize("fused", [False, True])
def test_a_parameter_without_a_gradient_is_left_alone_as_torch_optim_does(fused):
    ensemble = EnsembleMLP(MLPSpec(width=8), n_outputs=2, init_seeds=[0, 1], n_inputs=4)
    optimizer = EnsembleOptimizer(list(ensemble.parameters()), OptimSpec(), lr=[1e-2, 1e-2], weight_decay=[0.1, 0.1],
                                  fused=fused)
    before_out, before_in = ensemble.b_out.detach().clone(), ensemble.w_in.detach().clone()
    ensemble(torch.randn(8, 4)).square().sum().backward()
    ensemble.b_out.grad = None
    optimizer.step()
    assert torch.equal(ensemble.b_out, before_out)  # no weight decay either
    assert not torch.equal(ensemble.w_in, before_in)


def test_optimizer_state_round_trips_in_the_per_parameter_format():
    """Saved as a list of per-parameter dicts (as before the flat buffer), so older runs resume."""
    x = torch.randn(8, 4)
    models = [EnsembleMLP(MLPSpec(width=8), n_outputs=2, init_seeds=[0, 1], n_inputs=4) for _ in range(2)]
    optimizers = [EnsembleOptimizer(list(m.parameters()), OptimSpec(), lr=[1e-2, 3e-3], weight_decay=[0.1, 0.0])
                  for m in models]

    def steps(model, optimizer, n):
        for _ in range(n):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()

    steps(models[0], optimizers[0], 5)
    saved = optimizers[0].state_dict()
    assert [sorted(entry) for entry in saved["state"]] == [["exp_avg", "exp_avg_sq"]] * 4
    assert saved["state"][0]["exp_avg"].shape == models[0].w_in.shape
    models[1].load_state_dict(models[0].state_dict())
    optimizers[1].load_state_dict(saved)
    for model, optimizer in zip(models, optimizers):
        steps(model, optimizer, 5)
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_the_fused_update_is_the_per_parameter_one_bit_for_bit(name):
    x = torch.randn(8, 4)
    models = [EnsembleMLP(MLPSpec(width=8, depth=2), n_outputs=2, init_seeds=[0, 1], n_inputs=4) for _ in range(2)]
    optimizers = [EnsembleOptimizer(list(m.parameters()), OptimSpec(name=name, momentum=0.9), lr=[1e-2, 3e-3],
                                    weight_decay=[0.1, 0.0], fused=fused) for m, fused in zip(models, (False, True))]
    for _ in range(5):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step(active=torch.tensor([True, False]))
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_counting_on_the_device_updates_bit_for_bit_as_counting_on_the_host(name, fused):
    """What a replayed CUDA graph reads (the step count and the lr factor as 0-d tensors) gives the host's update."""
    spec = OptimSpec(name=name, lr=1e-2, weight_decay=0.1, momentum=0.9 if name == "sgd" else 0.0)
    gen = torch.Generator().manual_seed(0)
    host = [torch.randn(4, 5, 3, generator=gen), torch.randn(4, 7, generator=gen)]
    device = [p.clone() for p in host]
    lrs = [1e-2, 2e-2, 3e-3, 1e-3]
    on_host = EnsembleOptimizer(host, spec, lr=lrs, weight_decay=[0.1] * 4, fused=fused)
    on_device = EnsembleOptimizer(device, spec, lr=lrs, weight_decay=[0.1] * 4, fused=fused)
    on_device.count = torch.zeros((), dtype=torch.float64)
    for step in range(20):
        for a, b in zip(host, device):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        factor = 0.5 + step / 40
        on_host.step(factor)
        on_device.step(torch.tensor(factor, dtype=torch.float64))
    assert float(on_device.count) == on_device.steps == 20
    assert all(torch.equal(a, b) for a, b in zip(host, device))
