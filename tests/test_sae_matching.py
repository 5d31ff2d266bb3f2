"""Cross-seed matching of SAE dictionaries: planted permutations, random baselines, the agreement curve."""

import numpy as np
import pytest
import torch

from ontogeny.sae.matching import (
    agreement_curve,
    match,
    matching,
    pairwise_shared,
    shared_both_share,
    shared_share,
)


def unit_directions(n: int, dim: int, seed: int) -> torch.Tensor:
    rows = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return rows / rows.norm(dim=1, keepdim=True)


def test_a_permuted_dictionary_matches_itself_exactly():
    a = unit_directions(40, 16, seed=0)
    permutation = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    b = a[permutation] * torch.linspace(0.5, 3, 40)[:, None]  # row norms do not matter, only directions
    rows, cols, cosines = matching(a, b)
    assert np.allclose(cosines, 1.0)
    assert np.array_equal(rows, np.arange(40))
    assert np.array_equal(permutation.numpy()[cols], rows)  # b's row cols[i] is a's row i
    assert shared_share(match(a, b)) == 1.0


def test_encoder_and_decoder_must_both_match():
    """Paulo & Belrose's criterion by hand: 4 latents; b's decoder is a's permuted, b's encoder agrees for latents
    0-1 only (latent 2's encoder row is replaced by one orthogonal to every row of a, latent 3's rotated to cosine
    0.6 with its own)."""
    dec_a = torch.eye(4)
    enc_a = torch.eye(4, 6)
    order = torch.tensor([2, 0, 3, 1])  # b's row j is a's latent order[j]
    dec_b = dec_a[order]
    enc_b = enc_a[order].clone()
    enc_b[0] = torch.eye(6)[4]  # latent 2: an encoder row unlike any of a's
    enc_b[2] = 0.6 * enc_a[3] + 0.8 * torch.eye(6)[5]  # latent 3: cosine 0.6 with its own encoder row
    assert shared_share(match(dec_a, dec_b)) == 1.0  # by decoders alone every latent is shared
    assert shared_both_share((enc_a, enc_b), (dec_a, dec_b)) == 0.5  # latents 0 and 1
    assert shared_both_share((enc_a, enc_b), (dec_a, dec_b), threshold=0.5) == 0.75  # latent 3's 0.6 passes
    with pytest.raises(ValueError, match="same latents"):
        shared_both_share((enc_a[:3], enc_b[:3]), (dec_a, dec_b))


def test_signs_count():
    a = unit_directions(10, 8, seed=2)
    cosines = match(a, -a)
    assert (cosines < 0.9).all()  # -a's rows are opposite features: the best partners are not the negatives
    assert shared_share(cosines) == 0.0


def test_random_directions_share_little():
    dictionary, random = unit_directions(64, 64, seed=3), unit_directions(64, 64, seed=4)
    cosines = match(dictionary, random)
    # Hungarian matching maximizes, so the cosines sit above a random pair's ~1/sqrt(64); measured max 0.43
    assert shared_share(cosines, 0.7) == 0.0
    assert cosines.mean() < 0.4
    half = torch.cat([dictionary[:32], random[32:]])  # half of the dictionary kept, half replaced
    assert shared_share(match(dictionary, half), 0.7) == pytest.approx(0.5)


def test_the_agreement_curve_does_not_rise_with_the_threshold():
    a = unit_directions(30, 12, seed=5)
    noisy = a + torch.linspace(0, 1.5, 30)[:, None] * unit_directions(30, 12, seed=6)  # from exact to far off
    cosines = match(a, noisy)
    thresholds = np.append(np.linspace(-1, 1, 41), 1.01)  # cosine 1 still counts at threshold 1
    curve = agreement_curve(cosines, thresholds)
    assert curve[0] == 1.0 and curve[-1] == 0.0
    assert (np.diff(curve) <= 0).all()
    assert ((curve > 0) & (curve < 1)).sum() >= 5  # the shares fall in steps, not all at once


def test_unequal_widths_match_the_smaller_dictionary():
    a = unit_directions(20, 10, seed=7)
    cosines = match(a[:12], a)  # a wider dictionary that contains the narrower one
    assert cosines.shape == (12,) and torch.allclose(cosines, torch.ones(12, dtype=torch.float64))


def test_pairwise_shares_of_seeds():
    base = unit_directions(16, 8, seed=8)
    decoders = torch.stack([base, base[torch.randperm(16, generator=torch.Generator().manual_seed(9))],
                            unit_directions(16, 8, seed=10)])
    shares = pairwise_shared(decoders)
    assert shares[0, 1] == shares[1, 0] == 1.0
    assert shares[0, 2] < 0.5 and np.allclose(np.diag(shares), 1)


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match="same space"):
        match(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"matrix of directions \[W, d\]"):
        match(torch.zeros(2, 3, 4), torch.zeros(3, 4))
