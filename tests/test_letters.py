"""The letter-counting task: scored at the count token only, subsets from the tokenizer, a tiny run end to end, and
bad input in one line."""

import pytest
import torch

import ontogeny as og
from ontogeny.exceptions import SpecError
from ontogeny.tasks import IGNORE, make_task
from ontogeny.tasks.letters import LetterCountingTask
from ontogeny.tasks.letters_gen import QUESTION

TINY = ["model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=20", "seeds=2", "record.every=10",
        "task.n_words=300", "task.n_train_words=240", "task.n_test=50", "sweep.task.vocab_size=[16]"]


def test_only_the_count_token_is_scored():
    task = make_task([LetterCountingTask(n_words=300, n_train_words=240, n_test=40)], [0], 10_000)
    batch = task.batch(3)
    assert batch.x.shape == (64, task.n_positions) and batch.y.shape == batch.x.shape
    scored = batch.y != IGNORE
    assert (scored.sum(1) == 1).all()
    assert (batch.x[scored] == QUESTION).all()  # the count is predicted at the '?'
    first_digit = task.lexicon.vocabulary.first_digit
    assert ((batch.y[scored] >= first_digit) & (batch.y[scored] < first_digit + 10)).all()
    assert torch.equal(task.batch(3).x, batch.x) and not torch.equal(task.batch(4).x, batch.x)


def test_subsets_follow_the_tokenizer():
    chars = make_task([LetterCountingTask(vocab_size=10, n_words=300, n_train_words=240, n_test=200)], [0], 10_000)
    bpe = make_task([LetterCountingTask(vocab_size=24, n_words=300, n_train_words=240, n_test=200)], [0], 10_000)
    one_piece_per_letter = chars.eval_splits()[0].subsets
    assert "present_inside_token" not in one_piece_per_letter  # no merges: every letter is a piece of its own
    test = bpe.eval_splits()[0]
    inside, own, absent = (test.subsets[k] for k in ("present_inside_token", "present_own_token", "absent"))
    assert inside.any() and own.any() and absent.any()
    assert not (inside & own).any() and bool((inside | own | absent).all())
    count = test.y[test.y != IGNORE] - bpe.lexicon.vocabulary.first_digit  # the target digit of each prompt
    assert torch.equal(absent, count == 0)


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
        og.run("letter-counting", overrides=["sweep.task.vocab_size=[24]", override], out=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
