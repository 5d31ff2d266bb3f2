"""`letter_counting`: "how many <letter> in <word>?" with the word split by a chosen tokenizer (letters_gen.py).

A causal LM reads `<bos> how many <letter> in <word pieces> ?` and is scored on the count token alone. Training
prompts are fresh every step (drawn from ("data", data_seed, step)) about the lexicon's training words (uniformly,
or by a Zipf law with `word_zipf` > 0, so that a large BPE vocabulary has rare pieces); the word
tokenizer (characters, or BPE trained with Hugging Face `tokenizers` on the training words) and the lexicon come
from `split_seed`, so a run rebuilds them exactly. Evaluation: prompts about unseen words (`test`) and about
training words (`seen`), each prompt one example, with subsets by how the asked letter sits in the word's tokens
and by the training share of the piece that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import stream_seed
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import IGNORE, Batch, TokenSplit
from .language import LanguageTask
from .letters_gen import PAD, RARE, SHARE_BINS, Letters, build, sample


@TASKS.register("letter_counting")
@dataclass(frozen=True)
class LetterCountingSpec(TaskSpec):
    """Count a letter in a pseudo-word tokenized by characters or by BPE with `vocab_size` pieces."""

    name: str = "letter_counting"
    tokenizer: str = "bpe"  # "char" | "bpe"
    vocab_size: int = 24  # bpe: pieces, alphabet included (between n_letters and n_letters + syllables, both kinds)
    n_letters: int = 10
    n_words: int = 2000
    n_train_words: int = 1600
    max_syllables: int = 4
    present_share: float = 0.5
    word_zipf: float = 0.0  # training words drawn with P(rank r) ~ r^-word_zipf (0: uniform); BPE sees them alike
    n_test: int = 1000  # prompts about unseen words, and as many about training words
    batch_size: int = 64
    split_seed: int = 0

    def knobs(self) -> Letters:
        return Letters(n_letters=self.n_letters, n_words=self.n_words, n_train_words=self.n_train_words,
                       max_syllables=self.max_syllables, tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                       present_share=self.present_share, word_zipf=self.word_zipf)

    def check(self, check: Check) -> None:
        for field, message in self.knobs().check():  # the check adds "(got value)" itself
            check(False, f"task.{field}", message.removesuffix(f" (got {getattr(self, field)!r})"))
        check(self.n_test >= 1, "task.n_test", "must be at least 1")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")

    def sizes(self, spec: Spec) -> Sizes:
        # vocabulary: 3 specials + 4 prompt words + letters + 10 digits + at most vocab_size pieces
        pieces = self.n_letters if self.tokenizer == "char" else self.vocab_size
        vocab = 3 + 4 + self.n_letters + 10 + pieces
        length = 8 + 2 * self.max_syllables - 1  # the longest prompt read by the model (a char-tokenized word)
        return Sizes(vocab_size=vocab, n_positions=length, n_inputs=0, n_outputs=vocab, batch=self.batch_size,
                     n_eval=2 * self.n_test, objective="causal")

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return LetterCounting(tasks[0], data_seeds)


def _split(name: str, prompts, words: list[str]) -> TokenSplit:
    """Prompts as a split scored at the count token only: one example per prompt."""
    x, y = _inputs(prompts)
    present = torch.from_numpy(prompts.count > 0)
    inside = torch.from_numpy(prompts.inside_multichar)
    count = torch.from_numpy(prompts.count)
    subsets = {"absent": ~present, "present_inside_token": present & inside, "present_own_token": present & ~inside,
               "count_1": count == 1, "count_2": count == 2, "count_3_plus": count >= 3}
    share = np.nan_to_num(prompts.piece_share, nan=-1.0)  # NaN: no multi-letter piece holds the letter
    subsets |= {bin_name: torch.from_numpy((share >= low) & (share < high)) & present
                for bin_name, (low, high) in SHARE_BINS.items()}
    subsets["inside_rare_piece"] = torch.from_numpy((share >= 0) & (share < RARE)) & present
    subsets["inside_common_piece"] = torch.from_numpy(share >= RARE) & present
    return TokenSplit(name, torch.arange(len(count)), x, y, words=words,
                      subsets={k: v for k, v in subsets.items() if bool(v.any())})


def _inputs(prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """x = tokens[:, :-1]; y = IGNORE except the count token (predicted at the '?')."""
    tokens = torch.from_numpy(prompts.tokens)
    x = tokens[:, :-1]
    y = torch.full_like(x, IGNORE)
    rows = torch.arange(len(x))
    answer = torch.from_numpy(prompts.answer)
    y[rows, answer - 1] = tokens[rows, answer]
    return x, y


class LetterCounting(LanguageTask):
    """Letter counting for an ensemble: members share the lexicon and tokenizer and differ by data seed."""

    objective, pad_token = "causal", PAD

    def __init__(self, spec: LetterCountingSpec, data_seeds: list[int]):
        self.spec, self.data_seeds, self.n_members = spec, list(data_seeds), len(data_seeds)
        self.lexicon = build(spec.knobs(), spec.split_seed)
        self.vocab_size = self.n_outputs = spec.sizes(None).vocab_size  # the spec's fixed size (pieces may be fewer)
        self.n_positions = spec.sizes(None).n_positions
        words = self.lexicon.vocabulary.words()
        words = words + [f"<unused {i}>" for i in range(self.vocab_size - len(words))]
        self._splits = [_split("test", self._pad(sample(self.lexicon, "test", spec.n_test, spec.split_seed)), words),
                        _split("seen", self._pad(sample(self.lexicon, "train", spec.n_test,
                                                        stream_seed("letters-seen", spec.split_seed))), words)]

    def _pad(self, prompts):
        """Prompts padded to the spec's fixed length + 1 (the last token, <eos> or <pad>, is never read)."""
        tokens = np.full((len(prompts.tokens), self.n_positions + 1), PAD, dtype=np.int64)
        tokens[:, : prompts.tokens.shape[1]] = prompts.tokens
        prompts.tokens = tokens
        return prompts

    def eval_splits(self) -> list[TokenSplit]:
        """[test, seen]: prompts about unseen and about training words (uniform over the words, whatever
        word_zipf); subsets absent, present_inside_token, present_own_token (the asked letter inside a multi-letter
        piece, or a piece of its own), count_1/2/3_plus, and the inside prompts by the piece's training share
        (SHARE_BINS)."""
        return self._splits

    def measures(self, model) -> dict[str, torch.Tensor]:
        """None: the per-subset accuracies are the measures."""
        return {}

    def batch(self, step: int) -> Batch:
        """Fresh prompts about training words: x, y [B, T] if the members share a data seed, else [M, B, T]."""
        seeds = [self.data_seeds[0]] if len(set(self.data_seeds)) == 1 else self.data_seeds
        pairs = [_inputs(self._pad(sample(self.lexicon, "train", self.spec.batch_size,
                                          stream_seed("data", seed, step), weighted=True))) for seed in seeds]
        x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # [M or 1, B, T]
        weight = (y != IGNORE).flatten(1).float()
        return Batch(x[0], y[0], weight) if len(seeds) == 1 else Batch(x, y, weight)
