"""`grammar`: a language model trained on sentences of a probabilistic grammar with gold dependency trees
(grammar_gen.py), for the syntax-acquisition studies of Chen et al. 2024 ("Sudden drops in the loss").

Each member trains on a finite corpus of `n_train` sentences drawn from `split_seed`, visited in epochs ordered by its
data seed. A masked LM (BERT masking: `mask_rate` of the tokens, of those 80% replaced by <mask>, 10% by a random
word, 10% kept) draws its masks from ("mask", data_seed, step); a causal LM reads <bos> and the sentence. Recorded:
per-token losses on held-out sentences (with a fixed masking), minimal pairs of subject-verb agreement per
construction (split `pairs`), and at every checkpoint the strategy distances to corpus unigram / bigram / trigram
models fitted on the training corpus and every head's implicit-parse UAS on the probe sentences (language.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import generator, stream_seed
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import IGNORE, Batch, PairSplit, TokenSplit
from .grammar_gen import CONSTRUCTIONS, RELATIONS, Grammar, NgramModel, minimal_pairs, sample
from .language import NOT_A_WORD, LanguageTask, dependency_relations
from .modular import EpochOrder

PAD, MASK, BOS = 0, 1, 2  # grammar_gen.SPECIALS


@TASKS.register("grammar")
@dataclass(frozen=True)
class GrammarSpec(TaskSpec):
    """A masked or causal LM on a generated grammar with agreement attractors and optional center embedding."""

    name: str = "grammar"
    objective: str = "masked"  # "masked" (BERT-style) or "causal"
    n_nouns: int = 16
    n_verbs: int = 8
    n_adjectives: int = 4
    n_prepositions: int = 3
    pp_share: float = 0.3
    rc_share: float = 0.2
    center_share: float = 0.1
    center_depth: int = 1
    plural_share: float = 0.5
    adjective_share: float = 0.25
    n_classes: int = 1  # selection classes: verbs select their arguments' class, adjectives their noun's (1: none)
    n_train: int = 20_000  # training sentences
    n_test: int = 500  # held-out sentences (per-token losses)
    n_pairs: int = 100  # minimal pairs per construction
    n_probe: int = 200  # held-out sentences the attention and strategy probes read
    batch_size: int = 64
    mask_rate: float = 0.15
    split_seed: int = 0

    def grammar(self) -> Grammar:
        return Grammar(n_nouns=self.n_nouns, n_verbs=self.n_verbs, n_adjectives=self.n_adjectives,
                       n_prepositions=self.n_prepositions, pp_share=self.pp_share, rc_share=self.rc_share,
                       center_share=self.center_share, center_depth=self.center_depth, plural_share=self.plural_share,
                       adjective_share=self.adjective_share, n_classes=self.n_classes)

    def check(self, check: Check) -> None:
        check(self.objective in ("masked", "causal"), "task.objective", "must be 'masked' or 'causal'")
        for field, message in self.grammar().check():  # the check adds "(got value)" itself
            check(False, f"task.{field}", message.removesuffix(f" (got {getattr(self, field)!r})"))
        check(self.n_train >= 1, "task.n_train", "must be at least 1")
        check(self.n_test >= 1, "task.n_test", "must be at least 1")
        check(self.n_pairs >= 1, "task.n_pairs", "must be at least 1")
        check(1 <= self.n_probe <= self.n_test, "task.n_probe", "must be between 1 and task.n_test")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")
        check(0 < self.mask_rate < 1, "task.mask_rate", "must be strictly between 0 and 1")

    def sizes(self, spec: Spec) -> Sizes:
        grammar = self.grammar()
        return Sizes(vocab_size=grammar.vocab_size, n_positions=grammar.max_length(), n_inputs=0,
                     n_outputs=grammar.vocab_size, batch=self.batch_size,
                     n_eval=self.n_test + self.n_pairs * len(CONSTRUCTIONS) * 2, objective=self.objective)

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return GrammarLM(tasks[0], data_seeds)


def _pad(tokens: np.ndarray, length: int, fill=PAD) -> torch.Tensor:
    """Right-pad sentences [S, L] with `fill` (<pad>) to `length` positions: [S, length] of their dtype."""
    out = np.full((len(tokens), length), fill, dtype=tokens.dtype)
    out[:, : tokens.shape[1]] = tokens
    return torch.from_numpy(out)


def causal_io(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LM's input and targets for sentences words [S, T]: x = <bos> + words[:-1], y = words (IGNORE at
    pads)."""
    x = torch.cat([torch.full_like(words[:, :1], BOS), words[:, :-1]], dim=1)
    return x, words.masked_fill(words == PAD, IGNORE)


def bert_mask(words: torch.Tensor, rate: float, vocab_size: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of sentences words [S, T]: each non-pad token is chosen with probability `rate`; a chosen token
    becomes <mask> (80%), a random word (10%) or stays (10%). Returns (x, y): y holds the chosen tokens, IGNORE
    elsewhere."""
    draws = torch.rand(words.shape, generator=gen)  # [S, T]: chosen, then which corruption
    random_words = torch.randint(len((PAD, MASK, BOS)), vocab_size, words.shape, generator=gen)  # [S, T]
    chosen = (draws < rate) & (words != PAD)
    kind = draws / rate  # uniform in [0, 1) given chosen
    x = torch.where(chosen & (kind < 0.8), MASK, words)
    x = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_words, x)
    return x, words.masked_fill(~chosen, IGNORE)


class GrammarLM(LanguageTask):
    """The grammar task for an ensemble: members share the corpus and evaluation sets and differ by data seed."""

    def __init__(self, spec: GrammarSpec, data_seeds: list[int]):
        self.spec, self.data_seeds, self.n_members = spec, list(data_seeds), len(data_seeds)
        self._orders: dict[int, EpochOrder] = {}
        grammar = spec.grammar()
        self.objective, self.pad_token = spec.objective, PAD
        self.vocab_size = self.n_outputs = grammar.vocab_size
        self.n_positions = length = grammar.max_length()
        words = grammar.words()
        train = sample(grammar, spec.n_train, stream_seed("grammar-train", spec.split_seed))
        self.train_words = _pad(train.tokens, length)  # [n_train, T]
        # fresh sentences of the same grammar; a small grammar repeats some training sentences (subset `seen`)
        test = sample(grammar, spec.n_test, stream_seed("grammar-test", spec.split_seed))
        test_words = _pad(test.tokens, length)  # [S, T]
        seen = torch.tensor(_occurs_in(test_words, self.train_words))  # [S]
        if spec.objective == "causal":
            x, y = causal_io(test_words)
        else:
            x, y = bert_mask(test_words, spec.mask_rate, self.vocab_size, generator("mask-test", spec.split_seed))
        sequence, position = torch.nonzero(y != IGNORE, as_tuple=True)
        main_verb = torch.from_numpy(test.verb)[sequence] == position  # [N]
        attractor = torch.from_numpy(test.attractor)[sequence]
        self._splits = [
            TokenSplit("test", torch.arange(len(sequence)), x, y, words=words,
                       subsets={"main_verb": main_verb, "main_verb_attractor": main_verb & attractor,
                                "seen": seen[sequence]}, keep_logits=spec.n_probe),
            self._pairs(grammar, length),
        ]
        # probes: strategy distances on the held-out split's first sentences; the UAS on the same sentences unmasked
        n_probe = spec.n_probe
        self.probe_x, self.probe_y = x[:n_probe], y[:n_probe]
        ngram_probs = {name: NgramModel(order, self.vocab_size).fit(train.tokens, train.lengths)
                       .next_token_probs(test.tokens[:n_probe], test.lengths[:n_probe])
                       for order, name in ((1, "unigram"), (2, "bigram"), (3, "trigram"))}  # [S, L, V] each
        scored = self.probe_y != IGNORE  # [S, T]; word t is target t in both objectives
        self.references = {name: torch.from_numpy(_pad_probs(p, length))[scored].float()
                           for name, p in ngram_probs.items()}
        heads = _pad(test.heads[:n_probe] + 1, length) - 1  # [S, T], -1 where none (padding too)
        related = dependency_relations(heads)  # [S, T, T] over word positions
        queries = test_words[:n_probe] != PAD
        parse_heads, groups = _parse_targets(test, n_probe, length)
        if spec.objective == "causal":  # input position p holds word p - 1
            related = torch.nn.functional.pad(related[:, :-1, :-1], (1, 0, 1, 0))
            queries = torch.nn.functional.pad(queries[:, :-1], (1, 0))
            parse_heads = torch.nn.functional.pad(torch.where(parse_heads >= 0, parse_heads + 1, parse_heads)[:, :-1],
                                                  (1, 0), value=NOT_A_WORD)
            groups = {name: torch.nn.functional.pad(words[:, :-1], (1, 0)) for name, words in groups.items()}
            self.uas_x = None  # the causal probe input is already unmasked
        else:
            self.uas_x = test_words[:n_probe]
        self.related, self.uas_queries = related, queries
        self.parse_heads, self.parse_groups = parse_heads, groups

    def _pairs(self, grammar: Grammar, length: int) -> PairSplit:
        pairs = minimal_pairs(grammar, self.spec.n_pairs, stream_seed("grammar-pairs", self.spec.split_seed))
        good, bad = _pad(pairs.good, length), _pad(pairs.bad, length)
        site = torch.from_numpy(pairs.site)
        subsets = {name: torch.from_numpy(pairs.construction == name) for name in CONSTRUCTIONS
                   if (pairs.construction == name).any()}
        common = {"good_token": torch.from_numpy(pairs.good_token), "bad_token": torch.from_numpy(pairs.bad_token),
                  "subsets": subsets}
        if self.objective == "causal":
            (x, y), (bad_x, bad_y) = causal_io(good), causal_io(bad)
            return PairSplit("pairs", torch.arange(len(site)), x, y, bad=bad_x, bad_y=bad_y, site=site + 1, **common)
        x = good.clone()
        x[torch.arange(len(site)), site] = MASK
        return PairSplit("pairs", torch.arange(len(site)), x, torch.full_like(x, IGNORE), bad=bad,
                         bad_y=torch.full_like(x, IGNORE), site=site, **common)

    def eval_splits(self):
        """[test, pairs]: held-out tokens (subsets main_verb, main_verb_attractor, seen: the sentence also occurs in
        training) and minimal pairs (subsets by construction)."""
        return self._splits

    def batch(self, step: int) -> Batch:
        """`step`'s sentences, masked (MLM) or shifted (causal): x, y [B, T] when all members share a data seed,
        else [M, B, T]; weight [1 or M, B*T] marks the scored tokens."""
        seeds = [self.data_seeds[0]] if len(set(self.data_seeds)) == 1 else self.data_seeds
        xs, ys = [], []
        for seed in seeds:
            order = self._order(seed)
            words = self.train_words[order.positions(step)]  # [B, T]
            if self.objective == "causal":
                x, y = causal_io(words)
            else:
                x, y = bert_mask(words, self.spec.mask_rate, self.vocab_size, generator("mask", seed, step))
            xs.append(x)
            ys.append(y)
        x, y = torch.stack(xs), torch.stack(ys)  # [M or 1, B, T]
        weight = (y != IGNORE).flatten(1).float()  # [M or 1, B*T]
        return Batch(x[0], y[0], weight) if len(seeds) == 1 else Batch(x, y, weight)

    def _order(self, seed: int) -> EpochOrder:
        if seed not in self._orders:
            self._orders[seed] = EpochOrder(len(self.train_words), self.spec.batch_size, seed)
        return self._orders[seed]


MIN_RELATION_WORDS = 20  # a relation scored on its own needs this many words in the probe sentences


def _parse_targets(sentences, n: int, length: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Gold heads of the first n sentences for `directed_hits` ([n, length], NOT_A_WORD past each sentence) and the
    words of each relation with at least MIN_RELATION_WORDS of them (not root and punct, as Chen et al.'s table;
    both count in the overall score), plus `nsubj_attractor` (the main subject across
    an attractor: where a head that looks a fixed distance away fails)."""
    heads = torch.from_numpy(sentences.heads[:n])
    relations = torch.from_numpy(sentences.relations[:n])
    words = torch.arange(heads.shape[1])[None] < torch.from_numpy(sentences.lengths[:n])[:, None]
    heads = _pad(torch.where(words, heads, NOT_A_WORD).numpy(), length, NOT_A_WORD)
    groups = {name: relations == code for code, name in enumerate(RELATIONS) if name not in ("root", "punct")}
    across = torch.zeros_like(words)
    across[torch.arange(len(words)), torch.from_numpy(sentences.subject[:n])] = torch.from_numpy(
        sentences.attractor[:n])
    groups["nsubj_attractor"] = across
    return heads, {name: _pad(mask.numpy(), length, False) for name, mask in groups.items()
                   if int(mask.sum()) >= MIN_RELATION_WORDS}


def _occurs_in(sentences: torch.Tensor, corpus: torch.Tensor) -> list[bool]:
    """Whether each padded sentence [S, T] also occurs in the padded corpus [n, T]."""
    known = {row.tobytes() for row in corpus.numpy()}
    return [row.tobytes() in known for row in sentences.numpy()]


def _pad_probs(probs: np.ndarray, length: int) -> np.ndarray:
    """[S, L, V] -> [S, length, V], zero rows past L."""
    out = np.zeros((probs.shape[0], length, probs.shape[2]))
    out[:, : probs.shape[1]] = probs
    return out
