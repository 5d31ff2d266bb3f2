"""Chen et al. 2024's directed implicit parse (their released attention_depparse_probe.py): hand-computed cases, the
published procedure re-derived sentence by sentence in numpy, and the grammar task's recorded scores."""

import numpy as np
import pytest
import torch

from ontogeny.tasks import make_task
from ontogeny.tasks.grammar import GrammarSpec
from ontogeny.tasks.language import NOT_A_WORD, OFFSETS, directed_hits, offset_hits

X = NOT_A_WORD


def test_hand_computed_directions():
    heads = torch.tensor([[1, -1, 1, X]])  # w0 -> w1 (the root) <- w2, then a pad
    attention = torch.tensor([[0.5, 0.3, 0.2, 0.9],  # w0: itself zeroed, the pad never chosen -> w1, right
                              [0.1, 0.1, 0.8, 0.0],  # w1 -> w2: the root has no head to find
                              [0.6, 0.3, 0.1, 0.0],  # w2 -> w0: wrong
                              [0.3, 0.3, 0.3, 0.1]])  # the pad's own row is never scored
    hits = directed_hits(attention[None, None, None], heads)  # [M=1, H=1, 2, S=1, T]
    assert hits[0, 0, 0, 0].tolist() == [True, False, False, False]
    # head<-dep: w0 is attended most by w2 (0.6): wrong; w1 by w0 and w2 (0.3 each, the first wins): the root;
    # w2 by w1 (0.8): right
    assert hits[0, 0, 1, 0].tolist() == [False, False, True, False]


def test_hand_computed_offsets():
    heads = torch.tensor([[1, -1, 1, X], [X, 2, -1, 2]])  # the second sentence as a causal input: <bos> first
    expected = {-3: [[False, True, False, False], [False, False, True, False]],  # before the first word: the root
                -1: [[False, False, True, False], [False, False, False, True]],
                0: [[False] * 4, [False] * 4],  # the word itself is never its head
                1: [[True, False, False, False], [False, True, False, False]],
                2: [[False, False, False, False], [False, False, False, False]]}  # past the end: the last word
    for offset, hits in expected.items():
        assert offset_hits(heads, offset).tolist() == hits, offset


def _published_procedure(attention: np.ndarray, heads: list[int], mode: str) -> list[bool]:
    """One sentence as the released probe scores it: the map gets [CLS] and [SEP] rows and columns, the self
    attention is zeroed, [CLS]/[SEP] are stripped, the argmax + 1 (ROOT = 0) is compared with 1-based gold heads."""
    n = len(heads)
    full = np.random.default_rng(n).random((n + 2, n + 2))
    full[1:-1, 1:-1] = attention
    if mode == "transpose":
        full = full.T
    full[range(n + 2), range(n + 2)] = 0
    predicted = np.argmax(full[1:-1, 1:-1], axis=-1) + 1
    gold = [h + 1 for h in heads]  # -1 (root) -> 0
    return [p == g for p, g in zip(predicted, gold)]


def _published_offset(heads: list[int], offset: int) -> list[bool]:
    n = len(heads)
    return [max(0, min(i + offset + 1, n)) == h + 1 for i, h in enumerate(heads)]


def test_matches_the_published_procedure_on_random_maps():
    task = make_task([GrammarSpec(objective="masked", n_train=200, n_test=60, n_probe=60)], [0], 10_000)
    heads = task.parse_heads  # [S, T]
    rng = np.random.default_rng(0)
    pattern = torch.from_numpy(rng.dirichlet(np.ones(heads.shape[1]), size=(2, len(heads), 3, heads.shape[1])))
    hits = directed_hits(pattern.float(), heads)  # [2, 3, 2, S, T]
    for member in range(2):
        for head in range(3):
            for direction, mode in enumerate(("normal", "transpose")):
                for s in range(len(heads)):
                    gold = heads[s][heads[s] >= -1].tolist()
                    n = len(gold)
                    attention = pattern[member, s, head, :n, :n].numpy()
                    assert hits[member, head, direction, s, :n].tolist() == _published_procedure(
                        attention, gold, mode)
    for offset in OFFSETS:
        for s in range(len(heads)):
            gold = heads[s][heads[s] >= -1].tolist()
            assert offset_hits(heads, offset)[s, : len(gold)].tolist() == _published_offset(gold, offset)


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_a_head_that_reads_the_gold_tree_scores_every_word_but_the_roots(objective):
    task = make_task([GrammarSpec(objective=objective, n_train=200, n_test=300, n_probe=300)], [0], 10_000)
    heads = task.parse_heads
    positions = heads.shape[1]
    gold = torch.nn.functional.one_hot(heads.clamp_min(0), positions).float()  # [S, T, T]: dep -> head
    noise = torch.full((2, *heads.shape, positions), 1.0 / positions)
    pattern = torch.stack([noise, gold.expand(2, -1, -1, -1)], dim=2)  # [M=2, S, H=2, T, T]
    scores = task._directed_uas([pattern], n_heads=2)
    words, roots = int((heads >= -1).sum()), int((heads == -1).sum())
    assert float(scores["uas/best"][0]) == pytest.approx((words - roots) / words)
    assert float(scores["uas/L0H1"][0]) == pytest.approx((words - roots) / words)
    assert set(task.parse_groups) >= {"nsubj", "det", "obj", "nsubj_attractor"}
    for name in task.parse_groups:
        assert float(scores[f"uas/best/{name}"][0]) == 1.0, name
        assert 0 <= float(scores[f"uas/offset/{name}"][0]) <= 1
    # the subject's verb across an attractor is never a fixed distance away in every sentence
    assert float(scores["uas/offset/nsubj_attractor"][0]) < 0.8
    assert float(scores["uas/offset"][0]) == pytest.approx(max(
        float(offset_hits(heads, k).sum()) / words for k in OFFSETS))
