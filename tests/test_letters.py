"""The letter-counting task: scored at the count token only, subsets from the tokenizer, a tiny run end to end, and
bad input in one line."""

import pytest
import torch

import ontogeny as og
from ontogeny.exceptions import SpecError
from ontogeny.members import expand
from ontogeny.spec import load_spec
from ontogeny.tasks import IGNORE, make_task
from ontogeny.tasks.letters import LetterCountingSpec
from ontogeny.tasks.letters_gen import QUESTION, SHARE_BINS
from ontogeny.train.loop import EnsembleTrainer

TINY = ["model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=20", "seeds=2", "record.every=10",
        "task.n_letters=10", "task.vocab_size=16", "task.n_words=300", "task.n_train_words=240", "task.n_test=50",
        "sweep.task.vocab_size=[16]"]


def test_only_the_count_token_is_scored():
    task = make_task([LetterCountingSpec(n_words=300, n_train_words=240, n_test=40)], [0], 10_000)
    batch = task.batch(3)
    assert batch.x.shape == (64, task.n_positions) and batch.y.shape == batch.x.shape
    scored = batch.y != IGNORE
    assert (scored.sum(1) == 1).all()
    assert (batch.x[scored] == QUESTION).all()  # the count is predicted at the '?'
    first_digit = task.lexicon.vocabulary.first_digit
    assert ((batch.y[scored] >= first_digit) & (batch.y[scored] < first_digit + 10)).all()
    assert torch.equal(task.batch(3).x, batch.x) and not torch.equal(task.batch(4).x, batch.x)


def test_subsets_follow_the_tokenizer():
    chars = make_task([LetterCountingSpec(vocab_size=10, n_words=300, n_train_words=240, n_test=200)], [0], 10_000)
    bpe = make_task([LetterCountingSpec(vocab_size=24, n_words=300, n_train_words=240, n_test=200)], [0], 10_000)
    one_piece_per_letter = chars.eval_splits()[0].subsets
    assert "present_inside_token" not in one_piece_per_letter  # no merges: every letter is a piece of its own
    test = bpe.eval_splits()[0]
    inside, own, absent = (test.subsets[k] for k in ("present_inside_token", "present_own_token", "absent"))
    assert inside.any() and own.any() and absent.any()
    assert not (inside & own).any() and bool((inside | own | absent).all())
    count = test.y[test.y != IGNORE] - bpe.lexicon.vocabulary.first_digit  # the target digit of each prompt
    assert torch.equal(absent, count == 0)


def test_piece_share_subsets_split_the_inside_prompts():
    task = make_task([LetterCountingSpec(vocab_size=200, word_zipf=1.5, n_test=1000)], [0], 10_000)
    for split in task.eval_splits():
        subsets = split.subsets
        bins = torch.stack([subsets[name] for name in SHARE_BINS if name in subsets])
        assert len(bins) >= 3 and torch.equal(bins.sum(0), subsets["present_inside_token"].long())
        rare, common = subsets["inside_rare_piece"], subsets["inside_common_piece"]
        assert not (rare & common).any() and torch.equal(rare | common, subsets["present_inside_token"])
        assert rare.any() and common.any()


@pytest.mark.parametrize("data_orders", [1, 2])  # one shared batch, or one per member
def test_the_scored_tokens_alone_give_the_full_loss_and_gradient(data_orders):
    spec = load_spec("letter-counting", [*TINY, f"data_orders={data_orders}"])
    trainer = EnsembleTrainer([m for m in expand(spec) if m.ensemble == 0])
    batch = trainer.task.batch(5)
    results = []
    for few in (False, True):
        trainer._few_tokens = few
        loss, correct = trainer._forward_backward(5, batch, with_correct=True)
        results.append((loss.detach(), correct, [p.grad.clone() for p in trainer.params]))
    (full_loss, full_correct, full_grads), (loss, correct, grads) = results
    assert loss.shape == full_loss.shape == (len(trainer.members), batch.y.shape[-2] * batch.y.shape[-1])
    torch.testing.assert_close(loss, full_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(correct, full_correct)
    for grad, full in zip(grads, full_grads):
        torch.testing.assert_close(grad, full, rtol=1e-4, atol=1e-6)
    trainer._few_tokens = None
    assert trainer._scores_few_tokens(batch)  # one token of 13 is scored: chosen on its own


def test_a_tiny_sweep_records_accuracy_per_subset(tmp_path):
    run = og.run("letter-counting", overrides=TINY, out=tmp_path / "run")
    names = set(run.scalars().name)
    assert {"test/acc", "seen/acc", "test/absent/acc", "test/present_inside_token/acc"} <= names
    examples = run.examples().query("step == 20 and split == 'test'")
    assert len(examples) == 2 * 50  # one row per prompt and member


@pytest.mark.parametrize("override, words", [
    ("task.vocab_size=5", "task.vocab_size"),
    ("task.n_words=100", "task.n_words"),
    ("task.tokenizer=wordpiece", "task.tokenizer"),
])
def test_bad_input_is_one_line(tmp_path, override, words):
    with pytest.raises(SpecError, match=words) as info:
        og.run("letter-counting", overrides=["sweep.task.vocab_size=[200]", override], out=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
