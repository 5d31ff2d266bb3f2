"""The local learning coefficient through devinterp (`analyze --what llc`): the estimate of a regular model is d/2,
and the step writes its tables, diagnostics and summary."""

import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import ontogeny as og
from ontogeny.analysis import analyze
from ontogeny.analysis.llc import LLCSettings, estimate_llc, levelled
from ontogeny.cli import app

QUICK = ["llc.chains=2", "llc.draws=40", "llc.batch_size=16"]


def _fitted_softmax_regression(classes: int, width: int, n: int = 1000):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, width, generator=generator)
    y = torch.multinomial(torch.softmax(x @ torch.randn(width, classes, generator=generator), 1), 1,
                          generator=generator)[:, 0]
    model = nn.Linear(width, classes)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=1000, tolerance_grad=1e-10,
                                  tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return model, x, y


@pytest.mark.parametrize("classes", [2, 3])
def test_a_regular_model_has_llc_half_its_effective_parameters(classes):
    # Softmax regression at its optimum is regular: LLC = d / 2 with d = (classes - 1) x (inputs + 1) (the softmax
    # ignores a shift shared by every class). Sampled at the temperature of the theory, n_beta = n / ln n.
    model, x, y = _fitted_softmax_regression(classes, 3)
    settings = LLCSettings(lr=1e-3, n_beta=len(x) / math.log(len(x)), localization=1.0, chains=2, draws=3000,
                           burnin=500, batch_size=250)
    estimate = estimate_llc(model, x, y, "cross_entropy", settings)
    half_d = (classes - 1) * (3 + 1) / 2
    assert estimate["llc"] == pytest.approx(half_d, rel=0.15) and not estimate["negative"]


def test_levelled_tells_a_climbing_trace_from_a_flat_noisy_one():
    generator = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(2, 400, generator=generator).numpy()
    flat = 1.0 + noise
    climbing = 0.5 + 0.5 * (1 - torch.exp(-torch.arange(400) / 300.0)).numpy() + noise
    assert levelled(flat, init_loss=0.5) and not levelled(climbing, init_loss=0.5)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return og.run("grokking", overrides=["task.p=23", "steps=60", "seeds=2", "record.weights_every=30"],
                  out=tmp_path_factory.mktemp("llc") / "run")


def test_the_llc_step_estimates_every_member_at_every_saved_checkpoint(run):
    options = {"llc": dict(item.split(".", 1)[1].split("=") for item in QUICK)}
    result = analyze(run, what=["llc"], options=options)
    table, checks = result.tables["llc"], result.tables["llc_step_sizes"]
    saved = sorted(set(run.checkpoints().step))
    assert len(saved) >= 2 and sorted(zip(table.member, table.step)) == [(m, s) for m in (0, 1) for s in saved]
    assert table.llc.notna().all() and (table.chains == 2).all() and (table.draws == 40).all()
    assert table.n_beta_used.iloc[0] == pytest.approx(16 / math.log(16))  # devinterp's default for the batch
    assert sorted(checks.lr.round(6).unique()) == [round(1e-3 / 3, 6), 1e-3, 3e-3] and set(checks.step) == {60}
    (line,) = [line for line in result.summary if line.startswith("llc")]
    assert "median LLC" in line and "lr 0.001" in line and "at the last checkpoint, lr" in line
    assert set(og.open(run.path).tables()) >= {"llc", "llc_step_sizes"}
    from ontogeny.report import write_report

    assert "Local learning coefficient per member" in write_report(run.path).read_text()


def test_llc_settings_from_the_command_line(run):
    result = CliRunner().invoke(app, ["analyze", str(run.path), "--what", "llc", "--set", "llc.nope=1"])
    assert result.exit_code == 2 and "llc.nope: unknown setting" in result.output
    result = CliRunner().invoke(app, ["analyze", str(run.path), "--what", "llc", "--set", "llc.lr=fast"])
    assert result.exit_code == 2 and "llc.lr: expected a number, got 'fast'" in result.output
    result = CliRunner().invoke(app, ["analyze", str(run.path), "--what", "llc", "--set", "lr=1"])
    assert result.exit_code == 2 and "expected STEP.KEY=VALUE" in result.output
    args = ["analyze", str(run.path), "--what", "llc", *(a for item in QUICK for a in ("--set", item)),
            "--set", "llc.step_size_factors=0.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lr 0.0005 / 0.001 give" in result.output


def test_a_language_task_without_a_fixed_training_set_is_sampled_on_its_training_batches(tmp_path):
    from ontogeny.analysis.llc import run_llc, training_examples
    from ontogeny.rebuild import run_ensembles

    run = og.run("icl-markov", overrides=["steps=10", "seeds=2", "record.weights_every=10"], out=tmp_path / "run")
    ensemble = next(run_ensembles(run))
    x, y = training_examples(ensemble.task, 1, 100)
    first = ensemble.task.batch(0).member(1)
    assert len(x) == 100 and torch.equal(x[:len(first.x)], first.x[:100]) and x.shape[1:] == first.x.shape[1:]
    table, _ = run_llc(run, LLCSettings(chains=1, draws=20, batch_size=16, examples=64, step_size_factors=()))
    assert sorted(zip(table.member, table.step)) == [(0, 0), (0, 10), (1, 0), (1, 10)] and table.llc.notna().all()
