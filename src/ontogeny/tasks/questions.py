"""`question_formation`: a causal LM learns to turn declaratives into questions (or copy them) from training data in
which the linear and the hierarchical rule both fit; a generalization set tells which rule it learned.

McCoy, Frank & Linzen 2020; Qin, Saphra & Alvarez-Melis 2025 vary the training data's complexity and diversity
(questions_gen.py has the language, the splits and the knobs). The model reads whole examples
`<bos> declarative <marker> output <eos>` (x = tokens[:-1], y = tokens[1:]) and is scored only on the output: the
targets are IGNORE up to the marker and after <eos>, so the declarative is given, never predicted. With
`loss_on = "all"` training predicts every token (a language model of the whole example, as Ahuja et al. 2024, who
find that this objective brings hierarchical generalization); evaluation is scored on the output either way.

Each member trains on its own finite corpus of `n_train` examples, drawn from its knobs and `split_seed` and visited in
epochs ordered by its data seed; `complexity`, `diversity` and `disambiguating` may differ inside one ensemble (the
shapes do not depend on them). Recorded at every checkpoint, one example per sequence (`SequenceSplit`):
    test  fresh examples of each member's own training distribution (member_mask: each member only on its own);
          subsets quest, decl, subject_rc
    gen   the generalization questions (subject relative clause), shared; subset center_embedded
A sequence's loss is the mean loss of its scored tokens and it is correct when every scored token's argmax is right
(teacher-forced exact match: then greedy decoding writes exactly the same output, since each step's input is then
the right token). `measures` adds the rule score: `rule/hierarchical`, `rule/linear`, `rule/neither`, the shares of
gen questions whose first output token (the fronted auxiliary, read at the marker) is the main-clause auxiliary,
the linearly first one, or neither.

`kind = "tense"` is McCoy et al.'s tense reinflection on the same machinery (questions_gen.py): markers past (copy)
and present (reinflect, verbs agreeing with their subjects); the test subsets are then named present, past and
subject_rc, and the rule score reads the main verb of the gen outputs (at `Examples.rule_position`): agreeing with
the subject (hierarchical), with the attractor, the most recent noun (linear), or neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..seeds import stream_seed
from ..spec import TASKS, Check, Sizes, Spec, TaskSpec
from .base import IGNORE, Batch, SequenceSplit
from .language import LanguageTask
from .modular import EpochOrder
from .questions_gen import PAD, Examples, QuestionGrammar, sample
from .rule_score import RULES, member_rule, rule_scores

LOSS_SPANS = ("output", "all")
MAX_TEST = 1_000_000  # test example ids are config key * MAX_TEST + index (see `_config_key`)
GEN_CHUNK = 256  # gen sequences per forward pass of the rule score


@TASKS.register("question_formation")
@dataclass(frozen=True)
class QuestionFormationSpec(TaskSpec):
    """Question formation (or copying) as a causal LM scored on the output; knobs as `QuestionGrammar`'s."""

    name: str = "question_formation"
    n_nouns: int = QuestionGrammar.n_nouns
    n_verbs: int = QuestionGrammar.n_verbs
    n_auxiliaries: int = QuestionGrammar.n_auxiliaries
    n_prepositions: int = QuestionGrammar.n_prepositions
    complexity: float = QuestionGrammar.complexity
    diversity: int = QuestionGrammar.diversity
    disambiguating: float = QuestionGrammar.disambiguating
    subject_rc: float = QuestionGrammar.subject_rc  # Qin et al.'s complexity (-1: off; questions_gen.py)
    quest_share: float = QuestionGrammar.quest_share
    kind: str = QuestionGrammar.kind  # "question" | "tense"
    agreement: bool = QuestionGrammar.agreement  # auxiliaries agree with their subjects (questions_gen.py)
    loss_on: str = "output"  # training loss on the "output" only, or on "all" tokens (an LM of the whole example)
    n_train: int = 10_000  # training examples (each member's own finite corpus)
    n_test: int = 500  # in-distribution examples per member config
    n_gen: int = 500  # generalization questions, shared
    batch_size: int = 64
    split_seed: int = 0

    member_fields = frozenset({"complexity", "diversity", "disambiguating", "subject_rc"})  # each member's own corpus

    def grammar(self) -> QuestionGrammar:
        return QuestionGrammar(n_nouns=self.n_nouns, n_verbs=self.n_verbs, n_auxiliaries=self.n_auxiliaries,
                               n_prepositions=self.n_prepositions, complexity=self.complexity,
                               diversity=self.diversity, disambiguating=self.disambiguating, subject_rc=self.subject_rc,
                               quest_share=self.quest_share, kind=self.kind, agreement=self.agreement)

    def check(self, check: Check) -> None:
        for field, message in self.grammar().check():  # the check adds "(got value)" itself
            check(False, f"task.{field}", message.removesuffix(f" (got {getattr(self, field)!r})"))
        check(self.n_train >= 1, "task.n_train", "must be at least 1")
        check(1 <= self.n_test < MAX_TEST, "task.n_test", f"must be between 1 and {MAX_TEST - 1}")
        check(self.n_gen >= 1, "task.n_gen", "must be at least 1")
        check(self.loss_on in LOSS_SPANS, "task.loss_on", f"must be one of {', '.join(LOSS_SPANS)}")
        check(self.batch_size >= 1, "task.batch_size", "must be at least 1")

    def sizes(self, spec: Spec) -> Sizes:
        grammar = self.grammar()
        swept = {f"task.{name}" for name in self.member_fields}
        configs = math.prod(len(values) for key, values in spec.sweep if key in swept)  # at most this many test sets
        return Sizes(vocab_size=grammar.vocab_size, n_positions=grammar.max_length() - 1, n_inputs=0,
                     n_outputs=grammar.vocab_size, batch=self.batch_size, n_eval=configs * self.n_test + self.n_gen,
                     objective="causal")  # n_eval in sequences

    @classmethod
    def build(cls, tasks, data_seeds, max_probe_examples):
        return QuestionFormation(tasks, data_seeds)


def causal_output_io(examples: Examples, loss_on: str = "output") -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LM's input and targets for whole examples: x = tokens[:, :-1], y = tokens[:, 1:] with IGNORE except
    at the output and its <eos> (tokens positions output_start .. length - 1), or with `loss_on="all"` at every
    token after <bos> (declarative, marker, output, <eos>). ([N, L-1], [N, L-1]) int64."""
    tokens = torch.from_numpy(examples.tokens)  # [N, L]
    target_position = torch.arange(1, tokens.shape[1])[None]  # [1, L-1]: where in tokens each target sits
    first = torch.from_numpy(examples.output_start)[:, None] if loss_on == "output" else 1
    scored = (target_position >= first) & (target_position < torch.from_numpy(examples.lengths)[:, None])  # [N, L-1]
    return tokens[:, :-1].clone(), tokens[:, 1:].masked_fill(~scored, IGNORE)


def _config_key(spec: QuestionFormationSpec) -> int:
    """A number in [0, 1e9) naming the task spec's values, so a test example's id means one sentence in every
    ensemble of a run, whichever configs share an ensemble (a hash: ids stay apart unless two collide, ~1e-9)."""
    values = [float(getattr(spec, f.name)) if f.type == "float" else getattr(spec, f.name) for f in fields(spec)
              if f.name != "agreement" or spec.agreement]  # without agreement, the ids of runs made before it
    return stream_seed(f"questions-config:{values!r}", 0) % 1_000_000_000


class QuestionFormation(LanguageTask):
    """Question formation for an ensemble: each distinct member config has its own corpus and test set."""

    objective = "causal"
    pad_token = PAD

    def __init__(self, tasks: list[QuestionFormationSpec], data_seeds: list[int]):
        spec = tasks[0]
        self.specs, self.data_seeds, self.n_members = list(tasks), list(data_seeds), len(tasks)
        grammar = spec.grammar()
        self.references = {}  # no strategy distances: `measures` gives the rule score instead
        self.vocab_size = self.n_outputs = grammar.vocab_size
        self.n_positions = grammar.max_length() - 1
        configs = list(dict.fromkeys(self.specs))  # distinct member configs, first-seen order
        self._corpora = {c: causal_output_io(sample(c.grammar(), "train", c.n_train, c.split_seed), c.loss_on)
                         for c in configs}  # evaluation stays on the outputs
        self._orders: dict[int, EpochOrder] = {}
        self._splits = [self._test_split(configs), self._gen_split(grammar)]

    def _test_split(self, configs: list[QuestionFormationSpec]) -> SequenceSplit:
        copy, transform = configs[0].grammar().markers
        xs, ys, ids, kinds, subject_rc = [], [], [], [], []
        member_mask = torch.zeros(self.n_members, len(configs) * self.specs[0].n_test, dtype=torch.bool)  # [M, N]
        for block, config in enumerate(configs):
            examples = sample(config.grammar(), "test", config.n_test, config.split_seed)
            x, y = causal_output_io(examples)
            xs.append(x)
            ys.append(y)
            ids.append(_config_key(config) * MAX_TEST + torch.arange(config.n_test))
            kinds.append(examples.kind)
            subject_rc.append(examples.subject_rc)
            rows = slice(block * config.n_test, (block + 1) * config.n_test)
            for m, member_config in enumerate(self.specs):
                member_mask[m, rows] = member_config == config
        kind = np.concatenate(kinds)
        return SequenceSplit("test", torch.cat(ids), torch.cat(xs), torch.cat(ys), member_mask=member_mask,
                             subsets={transform: torch.from_numpy(kind == transform),
                                      copy: torch.from_numpy(kind == copy),
                                      "subject_rc": torch.from_numpy(np.concatenate(subject_rc))})

    def _gen_split(self, grammar: QuestionGrammar) -> SequenceSplit:
        spec = self.specs[0]
        self.gen = sample(grammar, "gen", spec.n_gen, spec.split_seed)  # independent of the member fields
        x, y = causal_output_io(self.gen)
        return SequenceSplit("gen", torch.arange(spec.n_gen), x, y,
                             subsets={"center_embedded": torch.from_numpy(self.gen.center_embedded)})

    def eval_splits(self) -> list[SequenceSplit]:
        """[test, gen] (module docstring), one example per sequence."""
        return self._splits

    @torch.no_grad()
    def measures(self, model) -> dict[str, torch.Tensor]:
        """{"rule/<hierarchical|linear|neither>": [M]}: shares of the gen examples whose output token at
        `rule_position` (the prediction at x position rule_position - 1: for questions the marker, predicting the
        fronted auxiliary; for tense the word before the main verb) follows that rule (rule_score.rule_scores).
        Questions are read as Qin et al. 2025 read them, the most likely of the auxiliaries; `rule_any/*` keeps the
        greedy token over the whole vocabulary (a token that is no auxiliary is "neither"), and
        `rule_depth1/*` / `rule_depth2/*` Qin et al.'s reading on the questions whose subject has one relative clause
        (McCoy et al.'s generalization set) / two nested ones. Tense: the greedy token."""
        device = next(model.parameters()).device
        x = self._splits[1].x  # [S, T]
        read_at = torch.from_numpy(self.gen.rule_position) - 1  # [S]: x position whose next token is judged
        reach = int(read_at.max()) + 1  # causal: later positions cannot change these predictions
        read = []
        for start in range(0, len(x), GEN_CHUNK):
            logits = model(x[start:start + GEN_CHUNK, :reach].to(device))  # [M, s, reach, C]
            at = read_at[start:start + GEN_CHUNK].to(device)
            read.append(logits[:, torch.arange(len(at), device=device), at].cpu())  # [M, s, C]
        logits = torch.cat(read, 1)  # [M, S, C]
        grammar = self.specs[0].grammar()
        firsts = {"rule": logits.argmax(-1).numpy()}  # [M, S]
        if not grammar.tense:  # Qin et al.'s score: the most likely auxiliary, whatever else is more likely
            auxiliaries = slice(grammar.first_auxiliary, grammar.first_auxiliary + grammar.n_auxiliary_tokens)
            firsts = {"rule": logits[..., auxiliaries].argmax(-1).numpy() + grammar.first_auxiliary,
                      "rule_any": firsts["rule"]}
        groups = {prefix: (first, slice(None)) for prefix, first in firsts.items()}
        if not grammar.tense:  # McCoy et al.'s gen set has one subject relative clause; two nested are deeper still
            deeper = self.gen.center_embedded
            groups |= {name: (firsts["rule"][:, items], items) for name, items in
                       (("rule_depth1", ~deeper), ("rule_depth2", deeper)) if items.any()}
        result = {}
        for prefix, (first, items) in groups.items():
            shares = [member_rule(rule_scores(row, self.gen.main_aux[items], self.gen.first_aux[items]))
                      for row in first]
            result |= {f"{prefix}/{rule}": torch.tensor([s[rule] for s in shares]) for rule in RULES}
        return result

    def batch(self, step: int) -> Batch:
        """`step`'s examples of every member's own corpus: x, y [B, T] when all members have one config and one data
        seed, else [M, B, T]; y is IGNORE outside the outputs; weight [1 or M, B*T] marks the scored tokens."""
        members = list(zip(self.specs, self.data_seeds))
        if len(set(members)) == 1:
            members = members[:1]
        xs, ys = [], []
        for config, seed in members:
            x, y = self._corpora[config]
            positions = self._order(seed, len(x)).positions(step)  # [B]
            xs.append(x[positions])
            ys.append(y[positions])
        x, y = torch.stack(xs), torch.stack(ys)  # [M or 1, B, T]
        weight = (y != IGNORE).flatten(1).float()  # [M or 1, B*T]
        return Batch(x[0], y[0], weight) if len(members) == 1 else Batch(x, y, weight)

    def _order(self, seed: int, n_train: int) -> EpochOrder:
        if seed not in self._orders:  # n_train is not a member field: one order per data seed serves every config
            self._orders[seed] = EpochOrder(n_train, self.specs[0].batch_size, seed)
        return self._orders[seed]
