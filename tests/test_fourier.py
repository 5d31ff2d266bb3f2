"""Fourier progress measures (Nanda et al. 2023): checked on an MLP whose weights implement the Fourier algorithm
exactly (Gromov 2023's analytic solution), against an FFT reference, and end to end on tiny runs."""

import math

import pytest
import torch

import ontogeny as og
from ontogeny import MLPSpec
from ontogeny.analysis.fourier import (fourier_basis, fourier_rows, frequency_power, key_frequencies,
                                       neuron_frequencies, neuron_frequency_share, readout_activations, run_fourier,
                                       split_logits)
from ontogeny.analysis.summary import grid_labels
from ontogeny.models import EnsembleMLP, EnsembleTransformer, TransformerSpec
from ontogeny.report import render_report
from ontogeny.report.figures_fourier import fourier_figure
from ontogeny.tasks.modular import modular_table, train_positions

P, FREQUENCIES, PHASES = 23, [2, 5, 9], 4  # 4 x 4 phase pairs per frequency cancel every term but cos(w(a+b-c))


def gromov_mlp(p: int, frequencies: list[int], scale: float) -> EnsembleMLP:
    """One member whose logits are exactly 8 * scale * sum_w cos(w (a + b - c)): neuron (w, i, j) embeds a as
    cos(w a + phi_i) and b as cos(w b + psi_j), squares their sum and reads out cos(w c + phi_i + psi_j); summed
    over the grid phi_i, psi_j = 2 pi i / 4, every term of the square but cos(w (a + b) + phi + psi) cancels."""
    width = len(frequencies) * PHASES**2
    model = EnsembleMLP(MLPSpec(width=width, activation="square", bias=False), n_outputs=p, init_seeds=[0],
                        vocab_size=p + 1, n_positions=3)
    x = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        model.embed.zero_()  # the '=' token and position carry nothing
        neuron = 0
        for k in frequencies:
            w = 2 * math.pi * k / p
            for i in range(PHASES):
                for j in range(PHASES):
                    phi, psi = 2 * math.pi * i / PHASES, 2 * math.pi * j / PHASES
                    model.embed[0, 0, :p, neuron] = torch.cos(w * x + phi).float()
                    model.embed[0, 1, :p, neuron] = torch.cos(w * x + psi).float()
                    model.w_out[0, neuron] = scale * torch.cos(w * x + phi + psi).float()
                    neuron += 1
    return model


def test_fourier_basis_is_orthonormal_and_labels_its_frequencies():
    for p in (11, 10):  # odd: (p - 1) / 2 cos/sin pairs; even: the last frequency p / 2 has a cosine only
        basis, frequency = fourier_basis(p)
        torch.testing.assert_close(basis @ basis.T, torch.eye(p, dtype=torch.float64))
        assert frequency.tolist()[:5] == [0, 1, 1, 2, 2] and frequency.max() == p // 2
        assert (frequency == p // 2).sum() == (1 if p % 2 == 0 else 2)


def test_frequency_power_of_a_hand_built_embedding_and_the_key_frequency_rule():
    p, d = 13, 6
    x = torch.arange(p, dtype=torch.float64)
    table = torch.zeros(1, 1, p, d, dtype=torch.float64)
    table[0, 0, :, 0] = 3 * torch.cos(2 * math.pi * 4 * x / p)  # power 9 * p / 2 at frequency 4
    table[0, 0, :, 1] = torch.sin(2 * math.pi * 6 * x / p + 0.3)  # power p / 2 at frequency 6
    table[0, 0, :, 2] = 2.0  # the constant: power 4 p, not a frequency
    power = frequency_power(table)[0]
    expected = torch.zeros(p // 2 + 1, dtype=torch.float64)
    expected[0], expected[4], expected[6] = 4 * p, 9 * p / 2, p / 2
    torch.testing.assert_close(power, expected)
    assert key_frequencies(power, 0.9) == [4] and key_frequencies(power, 0.95) == [4, 6]
    # the fewest, strongest first, to reach the share; a tie goes to the lower frequency
    assert key_frequencies(torch.tensor([100.0, 5, 1, 3, 1]), 0.9) == [1, 2, 3]
    assert key_frequencies(torch.zeros(5), 0.9) == []
    with pytest.raises(ValueError, match="share"):
        key_frequencies(power, 0.0)


def test_split_logits_matches_the_two_dimensional_fft():
    """Reference: keep (or drop) the 2-D DFT coefficients at (k, k) and (-k, -k) over (a, b), plus (0, 0)."""
    gen = torch.Generator().manual_seed(0)
    for p in (11, 12):
        logits = torch.randn(2, p * p, 5, generator=gen, dtype=torch.float64)
        chosen = [[1, 4], [2, 3, p // 2]]
        restricted, excluded = split_logits(logits, chosen)
        for m, key in enumerate(chosen):
            spectrum = torch.fft.fft2(logits[m].view(p, p, 5), dim=(0, 1))  # [u, v, c]
            mask = torch.zeros(p, p, 1, dtype=torch.bool)
            for k in key:
                mask[k, k] = mask[(p - k) % p, (p - k) % p] = True
            mean = torch.zeros_like(mask)
            mean[0, 0] = True
            keep = torch.fft.ifft2(spectrum * (mask | mean), dim=(0, 1)).real.reshape(p * p, 5)
            drop = torch.fft.ifft2(spectrum * ~mask, dim=(0, 1)).real.reshape(p * p, 5)
            torch.testing.assert_close(restricted[m], keep)
            torch.testing.assert_close(excluded[m], drop)
    with pytest.raises(ValueError, match="p\\*p"):
        split_logits(torch.zeros(1, 10, 3), [[1]])


def test_constructed_fourier_mlp_gives_its_frequencies_and_the_expected_losses():
    model = gromov_mlp(P, FREQUENCIES, scale=0.5)
    _, x, _ = modular_table(P, "+")
    with torch.no_grad():
        logits = model(x)[0].double()  # [p*p, p]
    a, b, c = x[:, 0, None].double(), x[:, 1, None].double(), torch.arange(P, dtype=torch.float64)
    exact = 8 * 0.5 * sum(torch.cos(2 * math.pi * k * (a + b - c) / P) for k in FREQUENCIES)
    torch.testing.assert_close(logits, exact, atol=2e-4, rtol=0)  # the construction is what it claims
    positions = [train_positions(P * P, 0.4, 0)]
    (row,) = fourier_rows(model, P, positions, [None])
    assert row["key_frequencies"] == "2, 5, 9" and row["n_key_frequencies"] == 3
    assert row["key_share"] == pytest.approx(1.0) and row["neuron_frequency_share"] == pytest.approx(1.0, abs=1e-6)
    assert row["neuron_key_frequencies"] == "2, 5, 9"  # Nanda et al.'s rule: each neuron's own frequency
    # a squared neuron puts 1/5 of its variance at twice its frequency (cos^2 terms): 0.8 explained, under 0.85
    _, explained = neuron_frequencies(readout_activations(model, P))
    torch.testing.assert_close(explained, torch.full_like(explained, 0.8), atol=1e-4, rtol=0)
    assert row["neurons_clustered"] == 0.0
    assert row["train_loss"] < 0.1 and row["test_loss"] < 0.1
    assert row["restricted_loss"] == pytest.approx(row["train_loss"], rel=1e-3)  # all of it is key frequencies
    assert row["restricted_train_loss"] == pytest.approx(row["train_loss"], rel=1e-3)
    assert row["excluded_loss"] == pytest.approx(math.log(P), abs=1e-4) == row["uniform_loss"]  # nothing left
    # two of the three: restricted keeps a working two-frequency model, excluded a weaker one-frequency model
    (dropped,) = fourier_rows(model, P, positions, [[2, 5]])
    assert dropped["key_frequencies"] == "2, 5, 9" and dropped["ablated_frequencies"] == "2, 5"
    assert row["train_loss"] < dropped["restricted_loss"] < dropped["excluded_loss"] < math.log(P)


def test_neuron_frequencies_by_hand():
    """Nanda et al.'s rule on planted neurons over (a, b): a product term, linear terms in a and b, a ReLU of a
    sum (its harmonics take a share, its own frequency the most) and a dead neuron."""
    p = 23
    a, b = torch.meshgrid(torch.arange(p, dtype=torch.float64), torch.arange(p, dtype=torch.float64), indexing="ij")
    w = 2 * math.pi / p
    neurons = torch.stack([torch.cos(w * 3 * (a + b)), torch.cos(w * 5 * a) + torch.sin(w * 5 * b),
                           torch.relu(torch.cos(w * 7 * a) + torch.cos(w * 7 * b)), torch.full_like(a, 0.3)], -1)
    frequency, explained = neuron_frequencies(neurons[None])  # [1, 4]
    assert frequency.tolist() == [[3, 5, 7, -1]]
    assert explained[0, :2].tolist() == pytest.approx([1.0, 1.0]) and 0.5 < explained[0, 2] < 0.99
    assert math.isnan(explained[0, 3])
    # a wave of frequency 20 > p // 2 is frequency 3 again (20 = 23 - 3): the basis folds it
    assert neuron_frequencies(torch.cos(w * 20 * a)[None, ..., None])[0].tolist() == [[3]]


def test_transformer_embedding_is_read_from_the_number_tokens_of_w_e():
    p = 11
    model = EnsembleTransformer(TransformerSpec(d_model=8, n_heads=2, d_mlp=16), vocab_size=p + 1, n_positions=3,
                                n_outputs=p, init_seeds=[0, 1])
    x = torch.arange(p, dtype=torch.float32)
    with torch.no_grad():
        model.W_E.zero_()
        model.W_E[0, :p, 0], model.W_E[1, :p, 3] = torch.cos(2 * math.pi * 3 * x / p), torch.sin(2 * math.pi * x / p)
        model.W_E[:, p] = 5.0  # the '=' token is not a number: it must not enter the spectrum
    rows = fourier_rows(model, p, [torch.arange(40), torch.arange(60)], [None, None])
    assert [r["key_frequencies"] for r in rows] == ["3", "1"]
    assert all(math.isnan(r["neuron_frequency_share"]) for r in rows)  # the residual stream has no neurons
    assert neuron_frequency_share(torch.randn(1, 2, p, 64, generator=torch.Generator().manual_seed(0))) < 0.5


TINY_GROKKING = ["task.p=11", "model.width=32", "steps=30", "record.every=10", "seeds=2"]


def test_fourier_step_end_to_end_on_an_mlp_run(tmp_path):
    run = og.run("grokking", overrides=[*TINY_GROKKING, "record.weights_every=10"], out=tmp_path / "mlp")
    assert "fourier" not in og.analysis.analyze(run).tables  # costly: only on request
    found = og.analysis.analyze(run, what=["fourier"])
    table = og.open(run.path).table("fourier")
    assert len(table) == 2 * 4 and set(table.step) == {0, 10, 20, 30}
    assert any(line.startswith("fourier [all]: key frequencies") for line in found.summary)
    assert 'id="fig-fourier"' in render_report(og.open(run.path))
    # the rebuilt models give the losses the trainer recorded
    scalars = run.scalars().pivot_table(index=["member", "step"], columns="name", values="value")
    merged = table.join(scalars, on=["member", "step"])
    torch.testing.assert_close(torch.tensor(merged.train_loss.to_numpy()),
                               torch.tensor(merged["train/loss"].to_numpy(), dtype=torch.float64), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(torch.tensor(merged.test_loss.to_numpy()),
                               torch.tensor(merged["test/loss"].to_numpy(), dtype=torch.float64), rtol=1e-4, atol=1e-5)
    for _, rows in table.groupby("member"):  # ablated: the last checkpoint's key frequencies, at every step
        assert rows.ablated_frequencies.nunique() == 1
        assert rows.ablated_frequencies.iloc[0] == rows.sort_values("step").key_frequencies.iloc[-1]
    assert (table.uniform_loss == math.log(11)).all() and table.neuron_frequency_share.between(0, 1).all()
    each = run_fourier(og.open(run.path), ablate="each")  # every checkpoint's own key frequencies
    assert (each.ablated_frequencies == each.key_frequencies).all()
    final = table[table.step == 30].set_index("member")
    assert (each[each.step == 30].set_index("member").excluded_loss == final.excluded_loss).all()
    with pytest.raises(ValueError, match="ablate"):
        run_fourier(og.open(run.path), ablate="first")
    members = run.members()
    figure = fourier_figure(table, grid_labels(members).set_axis(members.member))
    assert {trace.name for trace in figure.data} >= {"restricted per member", "excluded median"}


def test_fourier_step_on_a_transformer_run(tmp_path):
    overrides = ["task.p=11", "task.train_fraction=0.5", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32",
                 "steps=20", "record.every=10", "record.weights_every=10", "seeds=2"]
    run = og.run("grokking-nanda", overrides=overrides, out=tmp_path / "nanda")
    og.analysis.analyze(run, what=["fourier"])
    table = og.open(run.path).table("fourier")
    assert len(table) == 2 * 3 and table.neuron_frequency_share.isna().all()
    assert (table.n_key_frequencies >= 1).all() and table[["restricted_loss", "excluded_loss"]].notna().all().all()


def test_fourier_step_needs_saved_weights_and_modular_addition(tmp_path):
    bare = og.run("grokking", overrides=[*TINY_GROKKING, "record.weights_every=0"], out=tmp_path / "bare")
    found = og.analysis.analyze(bare, what=["fourier"])
    assert "fourier" not in found.tables
    (line,) = [line for line in found.summary if line.startswith("fourier")]
    assert "record.weights_every" in line and "weights saved at 1 step(s)" in line
    parity = og.run("sparse-parity", overrides=["task.n=10", "task.k=2", "task.n_test=32", "task.batch_size=16",
                                                "model.width=8", "steps=20", "record.every=10",
                                                "record.weights_every=10", "seeds=1"], out=tmp_path / "parity")
    found = og.analysis.analyze(parity, what=["fourier"])
    assert "fourier" not in found.tables
    (line,) = [line for line in found.summary if line.startswith("fourier")]
    assert "skipped" in line and "modular addition" in line and "task sparse_parity" in line
