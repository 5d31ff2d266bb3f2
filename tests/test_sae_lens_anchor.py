"""Anchor: with the same weights, sae-lens's TopK and standard (ReLU + L1) SAEs give our latents, reconstructions
and losses; trained from the same init on the same batches with the same Adam settings, both end at the same FVE
and L0. Runs where sae-lens is installed (pip install sae-lens)."""

import itertools
import warnings

import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # transformer_lens, which sae_lens imports, warns on import
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

from ontogeny.sae.model import EnsembleSAE, MemberBatches, measure, train_saes
from test_sae_model import planted_features

NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def their_sae(kind: str, d_in: int, width: int, *, k: int, l1: float, seed: int):
    torch.manual_seed(seed)  # sae-lens draws its init from the global generator
    if kind == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=width, k=k))
        assert sae.cfg.rescale_acts_by_decoder_norm  # the training default that ours follows
        return sae
    return StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=width, l1_coefficient=l1))


def their_loss(sae, x: torch.Tensor, dead: torch.Tensor | None, l1: float) -> torch.Tensor:
    step = TrainStepInput(sae_in=x, coefficients={"l1": l1}, dead_neuron_mask=dead, n_training_steps=0,
                          is_logging_step=False)
    return sae.training_forward_pass(step).loss


@pytest.mark.parametrize("kind", ["topk", "relu-l1"])
def test_same_weights_give_the_same_latents_reconstructions_and_losses(kind):
    gen = torch.Generator().manual_seed(0)
    d_in, width, k, l1 = 12, 40, 5, 0.3
    theirs = [their_sae(kind, d_in, width, k=k, l1=l1, seed=s) for s in range(3)]
    ours = EnsembleSAE(d_in, width, [0, 1, 2], kind=kind, k=k, l1=l1)
    with torch.no_grad():
        for member, sae in enumerate(theirs):
            # move away from the init: decoder rows of unequal norms, nonzero biases
            sae.W_enc.add_(0.3 * torch.randn(d_in, width, generator=gen))
            sae.W_dec.mul_(torch.rand(width, 1, generator=gen) * 20 + 1)
            sae.b_enc.copy_(0.1 * torch.randn(width, generator=gen))
            sae.b_dec.copy_(torch.randn(d_in, generator=gen))
            for name in NAMES:
                getattr(ours, name)[member] = getattr(sae, name)
    x = torch.randn(3, 64, d_in, generator=gen) * 2
    dead = torch.rand(3, width, generator=gen) < 0.3
    recon, z = ours(x)
    losses = ours.loss(x, x, dead if kind == "topk" else None)
    with torch.no_grad():
        for member, sae in enumerate(theirs):
            their_z = sae.encode(x[member])
            assert torch.allclose(z[member], their_z, atol=1e-5)
            assert torch.allclose(recon[member], sae.decode(their_z), atol=1e-5)
            assert torch.allclose(recon[member], sae(x[member]), atol=1e-5)
            their = their_loss(sae, x[member], dead[member] if kind == "topk" else None, l1)
            assert torch.allclose(losses[member], their, rtol=1e-5), (losses[member], their)
    if kind == "topk":
        assert (z != 0).sum(-1).max() == k
        assert not torch.allclose(losses, ours.loss(x, x))  # the AuxK term took part


def their_measures(sae, data: torch.Tensor) -> tuple[float, float]:
    """FVE and L0 of one sae-lens SAE on rows [N, d], from its own forward pass."""
    with torch.no_grad():
        recon, z = sae(data), sae.encode(data)
    fve = 1 - (recon - data).pow(2).sum() / (data - data.mean(0)).pow(2).sum()
    return fve.item(), (z > 0).sum(-1).float().mean().item()


@pytest.mark.parametrize("kind", ["topk", "relu-l1"])
def test_training_from_the_same_init_ends_at_the_same_fve_and_l0(kind):
    rows, _ = planted_features(n_features=48, dim=16, n_rows=2000, active=4, seed=1)
    d_in, width, k, l1, steps, batch, lr, window = 16, 48, 4, 1.0, 600, 64, 1e-3, 100
    theirs = their_sae(kind, d_in, width, k=k, l1=l1, seed=5)
    ours = EnsembleSAE(d_in, width, [0], kind=kind, k=k, l1=l1)
    with torch.no_grad():
        for name in NAMES:
            getattr(ours, name)[0] = getattr(theirs, name)
    data = rows[None]  # [1, N, d]
    train_saes(ours, data, data, steps=steps, batch_size=batch, lr=lr, data_seeds=[11], dead_window=window)
    batches = MemberBatches(len(rows), batch, [11])  # the very batches our member drew
    config = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr,
                              adam_beta1=0.9, adam_beta2=0.999, dead_feature_window=window,
                              feature_sampling_window=10 * steps, logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(config, theirs, (rows[batches.next()[0]] for _ in itertools.count())).fit()

    our_fve, our_l0 = (value.item() for value in (measure(ours, data, data)[key] for key in ("fve", "l0")))
    their_fve, their_l0 = their_measures(theirs, rows)
    difference = max((getattr(ours, name)[0] - getattr(theirs, name)).abs().max().item() for name in NAMES)
    print(f"{kind}: ours FVE {our_fve:.6f} L0 {our_l0:.4f}; sae-lens FVE {their_fve:.6f} L0 {their_l0:.4f}; "
          f"largest weight difference {difference:.2e}")
    # the same arithmetic up to float rounding (measured: equal to 6 digits, weights within 1e-7 (topk) and 3e-6
    # (relu-l1) after 600 steps); a TopK choice flipped by rounding could move them apart a little
    assert abs(our_fve - their_fve) < 1e-3
    assert abs(our_l0 - their_l0) < 0.05
    assert our_fve > 0.5  # both learned something
