"""English question formation with an ambiguous training set and a generalization set; the rule scorer
is in rule_score.py.

McCoy, Frank & Linzen 2020 ("Does syntax need to grow on trees?"): a model turns a declarative into a question by
fronting an auxiliary. Training questions all have a subject without a relative clause, so the linear rule ("front
the first auxiliary") and the hierarchical one ("front the main-clause auxiliary") both fit them; generalization
questions have a relative clause (with its own auxiliary) on the subject, where the two rules give different
answers. Qin, Saphra & Alvarez-Melis 2025 ("Sometimes I am a tree") vary the training data's *complexity* (share of
center-embedded sentences) and *diversity* (number of distinct syntax templates); both are knobs here.

The language (every noun phrase is `the N`; nouns, verbs and auxiliaries carry no number unless `agreement`):

    S        -> NP_subj Aux VP .
    NP_subj  -> the N [PP | RC | RC2]            PP  -> P the N            ("by the yak")
    RC       -> that Aux V_intr | that Aux V_tr the N                      ("that can see the yak")
    RC2      -> that Aux V_tr the N RC                                     (an RC on the RC's object: depth 2)
    VP       -> V_intr | V_tr the N [PP | RC]    (the object may carry a PP or a depth-1 RC)

A *template* is a sentence's shape with the words abstracted away ("Det N that Aux V Det N Aux V ."): one per
(subject option, main-clause option) pair, 6 x 5 = 30, in the fixed order of `QuestionGrammar.templates()`.
"Center-embedded" templates are those with RC2 on the subject (two relative clauses between the subject noun and
the main auxiliary): 10 of the 30; 10 more have a depth-1 subject RC and 10 have no subject RC (nothing or a PP).

Examples are `<bos> DECLARATIVE <marker> OUTPUT <eos>`; marker `decl`: OUTPUT = the declarative copied; marker
`quest`: OUTPUT = the main auxiliary, then the declarative without it, with "?" in place of ".":
    <bos> the newt that can see the yak will walk . quest will the newt that can see the yak walk ? <eos>

Splits:
    train   each example is a question with probability quest_share, else a declarative. A declarative's template
            is center-embedded with probability `complexity`, else uniform over the other allowed templates. A
            question has a subject RC with probability `disambiguating` (then center-embedded with probability
            `complexity`, else depth 1); otherwise its template is uniform over the allowed no-subject-RC templates.
            So `complexity` is the share of center-embedded sentences among the training sentences free to carry a
            subject RC (every declarative and every disambiguating question), not among all training sentences.
            `subject_rc` >= 0 is Qin et al. 2025's complexity instead (their "center-embedded" is any relative
            clause on the subject): a declarative has a subject RC with probability subject_rc (center-embedded with
            probability `complexity`, else depth 1), else none; at -1 (the default) a non-center declarative's
            template is uniform over the allowed ones, of which about half carry a subject RC.
    test    an independent draw from the training distribution (the same allowed templates; it may repeat
            training sentences, since the language is small).
    gen     questions only, template uniform over every subject-RC template of the grammar (depth 1 and 2),
            whatever complexity and diversity say.
In every question with a subject RC, each auxiliary before the main one differs from it (so the first auxiliary
!= the main auxiliary and the two rules front different words); elsewhere auxiliaries are independent and uniform.

Diversity d > 0: the templates training may use (those the shares can reach: no center-embedded one when
complexity = 0, and so on) are permuted by a generator drawn from the seed; for each group a positive share needs
(a no-subject-RC template for questions, a center-embedded one when complexity > 0, a depth-1 subject-RC one for
disambiguating questions when complexity < 1, a non-center one for declaratives when complexity < 1) whose member
is not yet among the front of the permutation, its first template is moved to the front; training uses the first d
templates of that order. A d too small to hold one template of each needed group is an error of `check()`.

Agreement (`agreement = True`, questions only): nouns are singular or plural (independent and uniform), and every
auxiliary has a singular and a plural form ("does"/"do", "doesn't"/"don't": McCoy et al.'s four auxiliaries at
n_auxiliaries = 2; then "has"/"have", "hasn't"/"haven't", ...: labels, not English morphology) agreeing with its own subject: the main one and a subject RC's with the subject
noun, an RC2's with the RC's object, an object RC's with the object. A declarative then carries the hierarchical
cue McCoy et al.'s language has: the main auxiliary agrees with the subject, not with a nearer noun (a subject PP's
or the subject RC's object, of the other number half the time). Without it, nothing in a declarative tells the
main auxiliary from the first.

Departures from McCoy et al. 2020 (their question-formation data, as Ahuja et al. 2024 release it: the auxiliaries
does/do/doesn't/don't agree with their subjects, six determiners): without `agreement`, auxiliaries are modals that
agree with nothing; every noun phrase is "the N"; relative clauses are subject-gap only ("that can see the yak",
never "that the yak can see"); a subject RC nests at most two deep (RC2) and only through the outer RC's object;
objects carry at most a PP or a depth-1 RC; questions end in "?" replacing ".".

Tense reinflection (`kind = "tense"`, McCoy et al.'s second task, the same shape): the same templates without their
auxiliaries ("Det N that V Det N V ."), nouns singular or plural, verbs past, present singular or present plural
(plural -s/-es, present singular -s, past -ed/-d or a few irregulars: labels, not English morphology). Markers
`past` (OUTPUT = the sentence copied, the `decl` analogue) and `present` (every verb reinflected to the present tense,
agreeing with its own subject: a subject RC's verb with the head noun, an RC2's with the RC's object, an object RC's
with the object; the main verb with the main subject):
    <bos> the newt that saw the yaks walked . present the newt that sees the yaks walks . <eos>
The linear rule makes the main verb agree with the most recent noun before it instead. Its *attractor* is that noun
where it is not the subject (a subject PP's noun, or the last object inside the subject's RC); it has the other
number than the subject in every gen example and every present example with a subject RC, and the subject's number in
present examples without one (nothing or a PP: there both rules fit). So the knobs read as for questions with
present for quest and past for decl: `quest_share` is the share of present examples, `disambiguating` the share of
present examples with a subject RC (an intransitive depth-1 RC holds no noun, so those do not disambiguate),
`complexity` the share of RC2 templates among the sentences free to carry a subject RC, `diversity` as above. `gen` is
present examples only, template uniform over the 20 with an attractor (subject PP, transitive RC, or RC2). Nouns'
numbers are otherwise independent and uniform; auxiliary words and "?" stay in the vocabulary, unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..seeds import stream_seed
from .questions_layout import (AUX_SLOTS, AUX_SUBJECT, DEPTH, LINEAR_NOUN, PRESENT, PRESENT_TENSE, SLOT, SLOTS, TEXT,
                               TEXT_TENSE, VERB_OBJECT, VERB_SUBJECT)
from .questions_templates import (GROUP_WHY, GROUPS, checked, least_diversity, needed_groups, reachable_templates,
                                  training_templates)

__all__ = ["KINDS", "SPECIALS", "SPLITS", "Examples", "QuestionGrammar", "render", "sample"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "decl", "quest")  # token ids 0..4 (tense: "past", "present" at 3 and 4)
KINDS = ("question", "tense")
MARKERS = {"question": ("decl", "quest"), "tense": ("past", "present")}  # (copy, transform) per kind
PAD, BOS, EOS, DECL, QUEST = range(5)
FUNCTION_WORDS = ("the", "that", ".", "?")
SPLITS = ("train", "test", "gen")

# McCoy et al.'s words where they have them (facts, not code); more come with a number appended
_NOUNS = ("newt", "yak", "raven", "walrus", "zebra", "quail", "unicorn", "peacock", "vulture", "salamander",
          "orangutan", "xylophone")
_INTRANSITIVE = ("walk", "swim", "sleep", "smile", "wait", "giggle", "read", "move")
_TRANSITIVE = ("see", "admire", "amuse", "confuse", "accept", "comfort", "remember", "entertain")
_AUXILIARIES = ("can", "will", "could", "would", "shall", "should", "may", "might", "must")
# agreement: (singular, plural); McCoy et al.'s question formation uses the first two (does/do, doesn't/don't)
_AGREEING = (("does", "do"), ("doesn't", "don't"), ("has", "have"), ("hasn't", "haven't"), ("is", "are"),
             ("isn't", "aren't"), ("was", "were"), ("wasn't", "weren't"))
_PREPOSITIONS = ("by", "near", "with", "behind", "around", "upon", "above", "below")
_IRREGULAR_PAST = {"see": "saw", "swim": "swam", "sleep": "slept"}


def _name(stems: tuple[str, ...], index: int) -> str:
    """The index-th name: the stems in order, then again with a number (newt, ..., xylophone, newt1, ...)."""
    round_, i = divmod(index, len(stems))
    return stems[i] + (str(round_) if round_ else "")


@dataclass(frozen=True)
class QuestionGrammar:
    """The knobs of the language and of the training distribution (see the module docstring)."""

    n_nouns: int = 12
    n_verbs: int = 8  # the first ceil(n_verbs / 2) are intransitive, the rest transitive
    n_auxiliaries: int = 4
    n_prepositions: int = 4
    complexity: float = 0.0  # share of center-embedded (RC2) templates among training sentences free to have one
    diversity: int = 0  # number of distinct templates in training (0: every template the shares can reach)
    disambiguating: float = 0.0  # share of training questions with a subject relative clause
    subject_rc: float = -1.0  # Qin et al.'s complexity: share of training declaratives with a subject RC (-1: off)
    quest_share: float = 0.5  # share of training examples that are questions (tense: present examples)
    kind: str = "question"  # "question" | "tense" (module docstring)
    agreement: bool = False  # questions: nouns singular or plural, every auxiliary agreeing with its subject

    def check(self) -> list[tuple[str, str]]:
        """Return [(field, message)] for every bad knob; empty if all are fine."""
        problems = []
        if self.kind not in KINDS:
            problems.append(("kind", f"must be one of {', '.join(KINDS)} (got {self.kind!r})"))
        if not isinstance(self.agreement, (bool, np.bool_)):
            problems.append(("agreement", f"must be true or false (got {self.agreement!r})"))
        elif self.agreement and self.kind == "tense":
            problems.append(("agreement", "is for questions: tense reinflection's verbs agree already (got True)"))
        for name, least in (("n_nouns", 1), ("n_verbs", 2), ("n_auxiliaries", 2), ("n_prepositions", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < least:
                problems.append((name, f"must be an integer >= {least} (got {value!r})"))
        shares_ok = True
        for name in ("complexity", "disambiguating", "quest_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not 0 <= value <= 1:
                problems.append((name, f"must be in [0, 1] (got {value!r})"))
                shares_ok = False
        if not (self.subject_rc == -1 or 0 <= self.subject_rc <= 1):
            problems.append(("subject_rc", f"must be in [0, 1], or -1 to leave the template mix (got "
                                           f"{self.subject_rc!r})"))
            shares_ok = False
        d = self.diversity
        if not isinstance(d, (int, np.integer)) or d < 0:
            problems.append(("diversity", f"must be an integer >= 0 (got {d!r})"))
        elif shares_ok and d > 0:
            pool = reachable_templates(self)
            needs = needed_groups(self)
            if d > len(pool):
                message = f"must be <= {len(pool)}, the number of templates training can use with these shares"
                problems.append(("diversity", f"{message} (got {d})"))
            elif d < least_diversity(needs):
                wanted = ", ".join(GROUP_WHY[group] for group in needs)
                problems.append(("diversity", f"{d} template(s) cannot hold one of each needed group: {wanted}"))
        return problems

    @property
    def n_intransitive(self) -> int:
        return -(-self.n_verbs // 2)

    @property
    def vocab_size(self) -> int:
        return self.first_preposition + self.n_prepositions

    @property
    def first_noun(self) -> int:
        return len(SPECIALS) + len(FUNCTION_WORDS)

    @property
    def tense(self) -> bool:
        return self.kind == "tense"

    @property
    def markers(self) -> tuple[str, str]:
        """The (copy, transform) markers: ("decl", "quest") or, for tense, ("past", "present")."""
        return MARKERS[self.kind]

    @property
    def numbered(self) -> bool:
        """Whether nouns are singular or plural (tense, or questions with agreement)."""
        return self.tense or self.agreement

    @property
    def first_verb(self) -> int:
        return self.first_noun + self.n_nouns * (2 if self.numbered else 1)  # singulars, then plurals

    @property
    def first_auxiliary(self) -> int:
        return self.first_verb + self.n_verbs * (3 if self.tense else 1)  # tense: past, present sg, present pl

    @property
    def n_auxiliary_tokens(self) -> int:
        """Auxiliary token ids from first_auxiliary: none for tense, singular then plural forms with agreement."""
        return 0 if self.tense else self.n_auxiliaries * (2 if self.agreement else 1)

    @property
    def first_preposition(self) -> int:
        return self.first_auxiliary + self.n_auxiliary_tokens

    def words(self) -> list[str]:
        """Return the text of every token id: SPECIALS, the, that, ., ?, nouns, verbs (intransitive first),
        auxiliaries, prepositions. Tense: the markers past/present, nouns singular then plural, verbs past then
        present singular then present plural (each block in lemma order), no auxiliaries."""
        n_transitive = self.n_verbs - self.n_intransitive
        nouns = [_name(_NOUNS, i) for i in range(self.n_nouns)]
        verbs = [*(_name(_INTRANSITIVE, i) for i in range(self.n_intransitive)),
                 *(_name(_TRANSITIVE, i) for i in range(n_transitive))]
        auxiliaries = [_name(_AUXILIARIES, i) for i in range(self.n_auxiliaries)]
        if self.agreement:
            pairs = [tuple(_name(forms, i) for forms in zip(*_AGREEING)) for i in range(self.n_auxiliaries)]
            auxiliaries = [singular for singular, _ in pairs] + [plural for _, plural in pairs]
        specials = list(SPECIALS)
        if self.numbered:
            nouns += [n + ("es" if n.endswith("s") else "s") for n in nouns]
        if self.tense:
            specials[3:5] = self.markers
            verbs = ([_IRREGULAR_PAST.get(v, v + ("d" if v.endswith("e") else "ed")) for v in verbs]
                     + [v + "s" for v in verbs] + verbs)
            auxiliaries = []
        return [*specials, *FUNCTION_WORDS, *nouns, *verbs, *auxiliaries,
                *(_name(_PREPOSITIONS, i) for i in range(self.n_prepositions))]

    def presence(self) -> np.ndarray:
        """Return each template's slot presence [n_templates, n_slots] (tense: without the auxiliaries)."""
        return PRESENT_TENSE if self.tense else PRESENT

    def max_length(self) -> int:
        """Return the longest example in tokens: <bos>, the longest declarative, marker, output as long, <eos>."""
        return 2 * int(self.presence().sum(axis=1).max()) + 3

    def templates(self) -> list[str]:
        """Return every template's text, in the fixed order that `Examples.template` indexes."""
        return list(TEXT_TENSE if self.tense else TEXT)

    def gen_templates(self) -> np.ndarray:
        """Return the indices of the gen split's templates: those whose subject has a relative clause (tense: an
        attractor, a noun between the subject and the main verb)."""
        return np.flatnonzero(LINEAR_NOUN != SLOT["s_N"] if self.tense else DEPTH > 0)

    def template_depths(self) -> np.ndarray:
        """Return each template's subject relative-clause depth [n_templates]: 0 none, 1 RC, 2 center-embedded."""
        return DEPTH.copy()



# ---- examples ----------------------------------------------------------------------------------------------------


@dataclass
class Examples:
    """N examples right-padded with <pad> to L = grammar.max_length(). Positions of auxiliaries count the
    declarative's words from 0 (in `tokens` the declarative's word i sits at i + 1, after <bos>). Tense reuses the
    auxiliary fields for the main verb: main_aux its present form agreeing with the subject, first_aux the one
    agreeing with the most recent noun (equal where no attractor), main_aux_position the main verb's position,
    first_aux_position that noun's."""

    tokens: np.ndarray  # [N, L] int64: <bos> declarative <marker> output <eos> <pad>...
    lengths: np.ndarray  # [N] int64
    output_start: np.ndarray  # [N] int64: position in `tokens` of the first output token (right after the marker)
    kind: np.ndarray  # [N] str: the marker, "decl" | "quest" (tense: "past" | "present")
    template: np.ndarray  # [N] int64: index into grammar.templates()
    subject_rc: np.ndarray  # [N] bool: the subject carries a relative clause (depth 1 or 2)
    center_embedded: np.ndarray  # [N] bool: the subject's relative clause holds another one (depth 2)
    main_aux: np.ndarray  # [N] int64: token id of the main-clause auxiliary
    first_aux: np.ndarray  # [N] int64: token id of the linearly first auxiliary
    main_aux_position: np.ndarray  # [N] int64: its position in the declarative
    first_aux_position: np.ndarray  # [N] int64
    rule_position: np.ndarray  # [N] int64: position in `tokens` of the output token that `rule_scores` judges
    # (questions: the first output token, the fronted auxiliary; tense: the main verb)

    def __len__(self) -> int:
        return len(self.lengths)


def _training_draw(grammar: QuestionGrammar, rng: np.random.Generator, n: int,
                   allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (is_question [n], template [n]) for the train/test distribution over the allowed templates."""
    question = rng.random(n) < grammar.quest_share
    disambiguating = question & (rng.random(n) < grammar.disambiguating)
    free = ~question | disambiguating  # may carry a subject RC; complexity applies
    center = free & (rng.random(n) < grammar.complexity)
    group = np.where(question & ~disambiguating, 0, np.where(center, 1, np.where(question, 2, 3)))  # [n]
    template = np.zeros(n, dtype=np.int64)
    draw = rng.random(n)
    if grammar.subject_rc >= 0:  # Qin et al.: a declarative has a subject RC with probability subject_rc
        with_rc = rng.random(n) < grammar.subject_rc  # drawn last: without the knob the streams are as before
        declarative = ~question
        group = np.where(declarative & ~with_rc, 0, np.where(declarative & ~center, 2, group))
    for code, name in enumerate(("plain", "center", "rc", "not-center")):
        rows = group == code
        choices = allowed[GROUPS[name][allowed]]
        if rows.any():  # check() guarantees choices for every group a share can reach
            template[rows] = choices[(draw[rows] * len(choices)).astype(np.int64)]
    return question, template


def sample(grammar: QuestionGrammar, split: str, n: int, seed: int) -> Examples:
    """Return n examples of `split` ("train", "test" or "gen"), padded to L = grammar.max_length(); the same
    (grammar, split, n, seed) always gives the same arrays; train and test share their templates (seed's)."""
    checked(grammar)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0 (got {n!r})")
    rng = np.random.default_rng(stream_seed("questions", seed, SPLITS.index(split)))
    if split == "gen":
        question = np.ones(n, dtype=bool)
        gen_templates = grammar.gen_templates()
        template = gen_templates[rng.integers(len(gen_templates), size=n)]
    else:
        question, template = _training_draw(grammar, rng, n, training_templates(grammar, seed))

    # every slot gets a word of its class; the template's presence mask then picks the words that are there
    n_slots = len(SLOTS)
    kind_of = [name.split("_")[-1] for name in SLOTS]
    words = np.zeros((n, n_slots), dtype=np.int64)  # [N, n_slots]
    the, that, dot, mark = (len(SPECIALS) + i for i in range(4))
    for s, kind in enumerate(kind_of):
        if kind == "the":
            words[:, s] = the
        elif kind == "that":
            words[:, s] = that
        elif kind == "dot":
            words[:, s] = dot
        elif kind == "N":
            words[:, s] = grammar.first_noun + rng.integers(grammar.n_nouns, size=n)
        elif kind == "P":
            words[:, s] = grammar.first_preposition + rng.integers(grammar.n_prepositions, size=n)
        elif kind == "Aux":  # tense drops these slots (presence) but still draws them: one random stream
            words[:, s] = grammar.first_auxiliary + rng.integers(grammar.n_auxiliaries, size=n)
    present = grammar.presence()[template]  # [N, n_slots]
    n_intransitive = grammar.n_intransitive
    for verb, object_the in VERB_OBJECT.items():
        transitive = present[:, SLOT[object_the]]
        lemma = np.where(transitive, n_intransitive + rng.integers(grammar.n_verbs - n_intransitive, size=n),
                         rng.integers(n_intransitive, size=n))
        words[:, SLOT[verb]] = grammar.first_verb + lemma
    subject_rc = DEPTH[template] > 0
    # in a question with a subject RC every earlier auxiliary differs from the main one, so the rules disagree
    main = words[:, SLOT["m_Aux"]] - grammar.first_auxiliary
    differs = question & subject_rc & (grammar.kind == "question")
    for name in ("r_Aux", "r2_Aux"):
        other = (main + 1 + rng.integers(grammar.n_auxiliaries - 1, size=n)) % grammar.n_auxiliaries
        words[differs, SLOT[name]] = grammar.first_auxiliary + other[differs]
    if grammar.agreement:  # drawn last, so the streams without agreement are as before
        number = rng.integers(2, size=(n, n_slots))  # [N, n_slots]: 0 singular, 1 plural (used at noun slots)
        nouns = [i for i, name in enumerate(SLOTS) if name.endswith("_N")]
        words[:, nouns] += number[:, nouns] * grammar.n_nouns
        for aux, subject in AUX_SUBJECT.items():
            words[:, SLOT[aux]] += number[:, SLOT[subject]] * grammar.n_auxiliaries

    # declarative positions and the two auxiliaries' identities
    position = np.cumsum(present, axis=1) - 1  # [N, n_slots]
    aux_columns = [SLOT[name] for name in AUX_SLOTS]
    first_column = np.array(aux_columns)[np.argmax(present[:, aux_columns], axis=1)]  # [N]; m_Aux is always there
    rows = np.arange(n)

    main_aux, first_aux = words[:, SLOT["m_Aux"]].copy(), words[rows, first_column]
    first_position = position[rows, first_column]
    rule_position = present.sum(axis=1) + 2  # the first output token
    if grammar.tense:
        words, output_words, main_aux, first_aux = _inflect(grammar, rng, words, template, question,
                                                            subject_rc | (split == "gen"))
        first_position = position[rows, LINEAR_NOUN[template]]
        rule_position = rule_position + position[:, SLOT["m_V"]]
        output_present = present
    else:  # the whole example as one slot row: <bos> declarative marker output <eos>; a question puts m_Aux first
        output_order = np.array([SLOT["m_Aux"]] + [s for s in range(n_slots) if s != SLOT["m_Aux"]])
        output_words = np.where(question[:, None], words[:, output_order], words)
        output_words[question, n_slots - 1] = mark  # "dot" is the last slot in both orders
        output_present = np.where(question[:, None], present[:, output_order], present)
    column = np.ones((n, 1), dtype=bool)
    full_words = np.concatenate([np.full((n, 1), BOS), words, np.where(question, QUEST, DECL)[:, None],
                                 output_words, np.full((n, 1), EOS)], axis=1)  # [N, 2 * n_slots + 3]
    full_present = np.concatenate([column, present, column, output_present, column], axis=1)
    full_position = np.cumsum(full_present, axis=1) - 1
    length = grammar.max_length()
    tokens = np.full((n, length), PAD, dtype=np.int64)  # [N, L]
    hit_rows, hit_cols = np.nonzero(full_present)
    tokens[hit_rows, full_position[hit_rows, hit_cols]] = full_words[hit_rows, hit_cols]
    declarative_length = present.sum(axis=1)
    return Examples(tokens=tokens, lengths=full_present.sum(axis=1).astype(np.int64),
                    output_start=(declarative_length + 2).astype(np.int64),
                    kind=np.where(question, grammar.markers[1], grammar.markers[0]).astype(object),
                    template=template.astype(np.int64), subject_rc=subject_rc, center_embedded=DEPTH[template] == 2,
                    main_aux=main_aux, first_aux=first_aux,
                    main_aux_position=position[:, SLOT["m_V" if grammar.tense else "m_Aux"]].astype(np.int64),
                    first_aux_position=first_position.astype(np.int64), rule_position=rule_position.astype(np.int64))


def _inflect(grammar: QuestionGrammar, rng: np.random.Generator, words: np.ndarray, template: np.ndarray,
             present_tense: np.ndarray, attract: np.ndarray) -> tuple[np.ndarray, ...]:
    """Tense: give the nouns numbers and the declarative's verbs (lemma ids, = past forms) their outputs. Returns
    (declarative words, output words [N, n_slots], main verb agreeing with the subject, with the most recent noun
    [N]). In present rows the linear noun gets the subject's other number where `attract`, else the subject's."""
    n = len(words)
    rows = np.arange(n)
    number = rng.integers(2, size=(n, len(SLOTS)))  # [N, n_slots]: 0 singular, 1 plural (used at noun slots)
    subject, linear = number[:, SLOT["s_N"]], LINEAR_NOUN[template]
    between = present_tense & (linear != SLOT["s_N"])  # a noun sits between subject and main verb
    number[between, linear[between]] = np.where(attract, 1 - subject, subject)[between]
    words = words.copy()
    nouns = [i for i, name in enumerate(SLOTS) if name.endswith("_N")]
    words[:, nouns] += number[:, nouns] * grammar.n_nouns
    output = words.copy()

    def agreeing(verb: str, agree_number: np.ndarray) -> np.ndarray:  # the verb's present form, [N]
        return words[:, SLOT[verb]] + (1 + agree_number) * grammar.n_verbs

    for verb, its_subject in VERB_SUBJECT.items():
        output[present_tense, SLOT[verb]] = agreeing(verb, number[:, SLOT[its_subject]])[present_tense]
    return words, output, agreeing("m_V", subject), agreeing("m_V", number[rows, linear])


def render(grammar: QuestionGrammar, tokens: np.ndarray) -> str:
    """Return one example [L] as words, stopping at the first <pad>."""
    words = grammar.words()
    out = []
    for token in tokens:
        if token == PAD:
            break
        out.append(words[token])
    return " ".join(out)
