"""A probabilistic English-like grammar with gold dependency trees, agreement minimal pairs and n-gram baselines.

Serves the syntax-acquisition task (Chen et al. 2024, "Sudden drops in the loss"): gold trees let one
score attention heads against dependency relations, and minimal pairs score subject-verb agreement as in BLiMP.

The language (every noun phrase is `the [Adj] N`; "the" is the only determiner):

    S       -> NP_subj [PP | RC | CRC] V_intr .          or   NP_subj [PP | RC | CRC] V_tr NP_obj .
    PP      -> P NP                                          ("near the cats")
    RC      -> that V_tr NP                                  ("that chases the cats"; subject relative clause)
    CRC     -> that NP [CRC] V_tr                            ("that the cats [that the dog sees] chase"; object
                                                              relative clause = center embedding, nested <= depth)

The subject carries a PP, RC or CRC with probabilities pp_share, rc_share, center_share (at most one), else nothing.
A CRC nests one more CRC inside its noun phrase with probability CENTER_NEST_SHARE, up to `center_depth` levels.
Every noun's number is plural with probability `plural_share`; every NP has an adjective with `adjective_share`.
Verb lemmas: the first ceil(n_verbs / 2) are transitive, the rest intransitive; the main verb's lemma is uniform
over all of them (a transitive one takes an object NP); RC and CRC verbs are transitive.

Selection (`n_classes` K > 1): every noun, adjective and verb lemma has a class (lemma % K); a transitive verb lemma
v takes a subject of class v % K and an object of class (v // K) % K, an intransitive one (index u among them) a
subject of class u % K, and an adjective goes with nouns of its own class, as verbs select their arguments in
English ("the dog barks", not "the idea barks"). Which word fits a slot then depends on the words it is linked to
by the tree, not only on its neighbours, so a model predicts words better once it follows the parse. K = 1: none.

Agreement: the main verb agrees in number with the subject head noun; an RC verb agrees with the noun it modifies
(the subject); a CRC verb agrees with its own subject noun (the N inside it). An attractor is a noun between the
subject and the main verb (the PP noun, the RC object, any CRC noun) of the other number than the subject.

Dependencies (UD-like; `heads[t]` is the position of t's head, -1 for the root and for pads):
    the, adjective -> their noun          subject noun -> main verb (the root)       object noun -> its verb
    preposition -> its noun               PP noun -> the noun it modifies          "." -> main verb
    that -> its RC/CRC verb               RC/CRC verb -> the noun it modifies     CRC subject noun -> CRC verb

Sentences are generated vectorized: one fixed template of slots (every optional word of the largest sentence),
each with a fixed head slot, a token per sentence and a presence mask; compacting the present slots gives the
positions, and the heads follow from the slots' positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..seeds import stream_seed
from . import ngram
from .ngram import NgramModel  # re-exported: the grammar task's n-gram references live beside it

__all__ = ["CONSTRUCTIONS", "RELATIONS", "SPECIALS", "Grammar", "MinimalPairs", "NgramModel", "Sentences", "Vocabulary",
           "arc_distances", "minimal_pairs", "render", "sample"]

SPECIALS = ("<pad>", "<mask>", "<bos>")  # token ids 0, 1, 2
PAD, MASK, BOS = 0, 1, 2
assert ngram.BOS == BOS, "an n-gram context starts at <bos>"
CONSTRUCTIONS = ("none", "pp", "rc", "center")  # what stands between the subject and the main verb
RELATIONS = ("root", "nsubj", "obj", "det", "amod", "case", "nmod", "acl", "punct")  # UD labels of Sentences.relations
CENTER_NEST_SHARE = 0.5  # P(a CRC holds one more CRC), while below center_depth
FUNCTION_WORDS = ("the", "that", ".")

_NOUN_STEMS = ("dog", "cat", "bird", "fox", "cow", "pig", "owl", "bee", "ant", "rat", "hen", "elk", "yak", "emu",
               "ram", "eel")
_TRANSITIVE_STEMS = ("see", "chase", "like", "help", "find", "push", "call", "feed")
_INTRANSITIVE_STEMS = ("run", "sleep", "sing", "swim", "fall", "jump", "wait", "hide")
_ADJECTIVES = ("big", "red", "old", "shy", "tall", "calm", "wet", "odd")
_PREPOSITIONS = ("near", "behind", "with", "under", "beside", "above")


@dataclass(frozen=True)
class Grammar:
    """The knobs of the language (see the module docstring)."""

    n_nouns: int = 16  # noun lemmas, each with a singular and a plural token
    n_verbs: int = 8  # verb lemmas (singular and plural token); the first ceil(n_verbs / 2) are transitive
    n_adjectives: int = 4
    n_prepositions: int = 3
    pp_share: float = 0.3  # P(the subject carries a PP)
    rc_share: float = 0.2  # P(the subject carries a subject relative clause)
    center_share: float = 0.1  # P(the subject carries a center-embedded object relative clause)
    center_depth: int = 1  # max CRC nesting (0 disables CRCs: their share goes to "none")
    plural_share: float = 0.5  # P(a noun is plural)
    adjective_share: float = 0.25  # P(a noun phrase has an adjective)
    n_classes: int = 1  # selection classes (see the module docstring); 1: any word goes with any other

    def check(self) -> list[tuple[str, str]]:
        """Return [(field, message)] for every out-of-range knob; empty if all are fine."""
        problems = []
        for name, least in (("n_nouns", 2), ("n_verbs", 2), ("n_adjectives", 1), ("n_prepositions", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < least:
                problems.append((name, f"must be an integer >= {least} (got {value!r})"))
        for name in ("pp_share", "rc_share", "center_share", "plural_share", "adjective_share"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                problems.append((name, f"must be in [0, 1] (got {value!r})"))
        total = self.pp_share + self.rc_share + self.center_share
        if total > 1 + 1e-12:
            problems.append(("pp_share", f"pp_share + rc_share + center_share must be <= 1 (got {total:g})"))
        if not isinstance(self.center_depth, (int, np.integer)) or self.center_depth not in (0, 1, 2, 3):
            problems.append(("center_depth", f"must be 0, 1, 2 or 3 (got {self.center_depth!r})"))
        classes = self.n_classes
        if not isinstance(classes, (int, np.integer)) or classes < 1:
            problems.append(("n_classes", f"must be an integer >= 1 (got {classes!r})"))
        elif not problems:  # each class has as many words of each kind; each (subject, object) class pair a verb
            for name in ("n_nouns", "n_adjectives"):
                if getattr(self, name) % classes:
                    problems.append((name, f"must be a multiple of n_classes = {classes} "
                                           f"(got {getattr(self, name)!r})"))
            if self.n_transitive % classes**2 or (self.n_verbs - self.n_transitive) % classes:
                problems.append(("n_verbs", f"must give ceil(n_verbs / 2) transitive verbs, a multiple of n_classes^2 "
                                            f"= {classes**2}, and the rest a multiple of {classes} "
                                            f"(got {self.n_verbs!r})"))
        return problems

    @property
    def n_transitive(self) -> int:
        return math.ceil(self.n_verbs / 2)

    @property
    def vocab_size(self) -> int:
        return (len(SPECIALS) + len(FUNCTION_WORDS) + 2 * self.n_nouns + 2 * self.n_verbs + self.n_adjectives
                + self.n_prepositions)

    def words(self) -> list[str]:
        """Return the text of every token id: SPECIALS, "the", "that", ".", nouns (singular, plural per lemma),
        verbs (singular, plural per lemma; transitive lemmas first), adjectives, prepositions."""
        out = [*SPECIALS, *FUNCTION_WORDS]
        for lemma in range(self.n_nouns):
            stem = _name(_NOUN_STEMS, lemma)
            out += [stem, _with_s(stem)]
        for lemma in range(self.n_verbs):
            transitive = lemma < self.n_transitive
            stem = _name(_TRANSITIVE_STEMS if transitive else _INTRANSITIVE_STEMS,
                         lemma if transitive else lemma - self.n_transitive)
            out += [_with_s(stem), stem]
        out += [_name(_ADJECTIVES, i) for i in range(self.n_adjectives)]
        out += [_name(_PREPOSITIONS, i) for i in range(self.n_prepositions)]
        return out

    def vocabulary(self) -> Vocabulary:
        """Return the token-id layout (where each word class starts)."""
        return Vocabulary(self)

    def max_length(self) -> int:
        """Return the longest sentence (tokens, no <bos>) that these knobs can produce: a modifier counts only if
        its share is > 0, an adjective only if adjective_share > 0."""
        noun_phrase = 2 + (self.adjective_share > 0)
        modifiers = [0]
        if self.pp_share > 0:
            modifiers.append(1 + noun_phrase)
        if self.rc_share > 0:
            modifiers.append(2 + noun_phrase)
        if self.center_share > 0 and self.center_depth >= 1:
            modifiers.append(self.center_depth * (2 + noun_phrase))
        return noun_phrase + max(modifiers) + 1 + noun_phrase + 1  # subject, modifier, verb, object, "."


def _name(stems: tuple[str, ...], index: int) -> str:
    """The index-th name: the stems in order, then the stems again with a number (dog, ..., eel, dog1, ...)."""
    round_, i = divmod(index, len(stems))
    return stems[i] + (str(round_) if round_ else "")


def _with_s(stem: str) -> str:
    """English -s: plural noun or third-person singular verb (fox -> foxes, push -> pushes, dog -> dogs)."""
    return stem + ("es" if stem.endswith(("s", "x", "sh", "ch")) else "s")


class Vocabulary:
    """Token ids by word class: `noun(lemma, plural)`, `verb(lemma, plural)`, and the number of any noun/verb token."""

    def __init__(self, grammar: Grammar):
        self.the, self.that, self.dot = len(SPECIALS), len(SPECIALS) + 1, len(SPECIALS) + 2
        self.first_noun = len(SPECIALS) + len(FUNCTION_WORDS)
        self.first_verb = self.first_noun + 2 * grammar.n_nouns
        self.first_adjective = self.first_verb + 2 * grammar.n_verbs
        self.first_preposition = self.first_adjective + grammar.n_adjectives
        self.size = self.first_preposition + grammar.n_prepositions

    def noun(self, lemma, plural) -> np.ndarray:
        """Token ids of nouns (lemma, plural: ints or arrays of one shape)."""
        return self.first_noun + 2 * np.asarray(lemma) + np.asarray(plural, dtype=np.int64)

    def verb(self, lemma, plural) -> np.ndarray:
        """Token ids of verbs (lemma, plural: ints or arrays of one shape)."""
        return self.first_verb + 2 * np.asarray(lemma) + np.asarray(plural, dtype=np.int64)

    def is_noun(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        return (tokens >= self.first_noun) & (tokens < self.first_verb)

    def is_verb(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        return (tokens >= self.first_verb) & (tokens < self.first_adjective)

    def plural(self, tokens) -> np.ndarray:
        """Return True where a noun or verb token is plural (meaningless for other tokens)."""
        return (np.asarray(tokens) - self.first_noun) % 2 == 1  # nouns then verbs: (singular, plural) per lemma


# ---- the slot template ----------------------------------------------------------------------------------------


def _template(depth: int) -> tuple[list[str], np.ndarray]:
    """Return the slot names of the largest sentence (in word order) and each slot's head slot ([n_slots], -1 root)."""
    heads = {"s_the": "s_N", "s_adj": "s_N", "s_N": "V",
             "p_P": "p_N", "p_the": "p_N", "p_adj": "p_N", "p_N": "s_N",
             "r_that": "r_V", "r_V": "s_N", "r_the": "r_N", "r_adj": "r_N", "r_N": "r_V"}
    order = list(heads)
    for k in range(1, depth + 1):
        for part, head in (("that", "V"), ("the", "N"), ("adj", "N"), ("N", "V")):
            heads[f"c{k}_{part}"] = f"c{k}_{head}"
            order.append(f"c{k}_{part}")
    for k in range(depth, 0, -1):  # the innermost CRC's verb comes first
        heads[f"c{k}_V"] = f"c{k - 1}_N" if k > 1 else "s_N"
        order.append(f"c{k}_V")
    heads |= {"V": None, "o_the": "o_N", "o_adj": "o_N", "o_N": "V", "dot": "V"}
    order += ["V", "o_the", "o_adj", "o_N", "dot"]
    index = {name: i for i, name in enumerate(order)}
    return order, np.array([-1 if heads[name] is None else index[heads[name]] for name in order], dtype=np.int64)


def _relation(slot: str) -> int:
    """The UD relation (index into RELATIONS) of a slot's word to its head: a subject RC's "that" is its verb's
    subject, an object RC's (a CRC's) its object."""
    part = slot.split("_", 1)[1]
    if part == "N":
        return RELATIONS.index({"s": "nsubj", "p": "nmod", "r": "obj", "o": "obj"}.get(slot[0], "nsubj"))
    if part == "that":
        return RELATIONS.index("nsubj" if slot[0] == "r" else "obj")
    return RELATIONS.index({"the": "det", "adj": "amod", "P": "case", "V": "acl"}[part])


@dataclass
class Sentences:
    """S sentences right-padded with <pad> to L = grammar.max_length(); positions count from 0 (no <bos>)."""

    tokens: np.ndarray  # [S, L] int64
    lengths: np.ndarray  # [S] int64
    heads: np.ndarray  # [S, L] int64: head position of each token, -1 for the root verb and for pads
    relations: np.ndarray  # [S, L] int64: index into RELATIONS of each token's relation to its head, -1 for pads
    verb: np.ndarray  # [S] int64: position of the main verb
    subject: np.ndarray  # [S] int64: position of the subject head noun
    construction: np.ndarray  # [S] str: "none" | "pp" | "rc" | "center"
    attractor: np.ndarray  # [S] bool: a noun of the other number than the subject stands before the main verb

    def __len__(self) -> int:
        return len(self.lengths)


def _generate(grammar: Grammar, rng: np.random.Generator, construction: np.ndarray, subject_plural: np.ndarray,
              force_attractor: bool) -> Sentences:
    """Build sentences with the given construction codes [S] (indices into CONSTRUCTIONS) and subject numbers [S];
    with `force_attractor` the noun nearest the subject inside its modifier gets the other number."""
    vocab = grammar.vocabulary()
    depth = grammar.center_depth
    order, head_slot = _template(depth)
    slot = {name: i for i, name in enumerate(order)}
    n = len(construction)
    tokens = np.zeros((n, len(order)), dtype=np.int64)  # [S, n_slots]
    present = np.zeros((n, len(order)), dtype=bool)  # [S, n_slots]

    def put(name, token, where=True):
        tokens[:, slot[name]] = token
        present[:, slot[name]] = where

    classes = grammar.n_classes

    def noun_phrase(prefix, where, plural=None, cls=None):
        """Fill `prefix`_the, _adj, _N where `where` (the noun of class `cls` [S], any if None); return the noun's
        number [S] and class [S]."""
        if plural is None:
            plural = rng.random(n) < grammar.plural_share
        put(f"{prefix}_the", vocab.the, where)
        adjective = rng.integers(grammar.n_adjectives // classes, size=n)  # its index within the noun's class
        with_adjective = where & (rng.random(n) < grammar.adjective_share)
        lemma = in_class(grammar.n_nouns, cls)
        put(f"{prefix}_adj", vocab.first_adjective + lemma % classes + classes * adjective, with_adjective)
        put(f"{prefix}_N", vocab.noun(lemma, plural), where)
        return np.where(where, plural, False), lemma % classes

    def in_class(count, cls):
        """Lemmas [S] uniform among `count` whose class (lemma % classes) is `cls` [S], or among all if None (with
        one class, the same draws as before selection existed)."""
        if cls is None:
            return rng.integers(count, size=n)
        return cls + classes * rng.integers(count // classes, size=n)

    everywhere = np.ones(n, dtype=bool)
    _, subject_class = noun_phrase("s", everywhere, subject_plural)
    opposite = ~subject_plural if force_attractor else None
    intervening = []  # (noun number [S], noun present [S]) for attractor labels

    is_pp = construction == CONSTRUCTIONS.index("pp")
    put("p_P", vocab.first_preposition + rng.integers(grammar.n_prepositions, size=n), is_pp)
    intervening.append((noun_phrase("p", is_pp, opposite)[0], is_pp))

    is_rc = construction == CONSTRUCTIONS.index("rc")
    put("r_that", vocab.that, is_rc)
    rc_verb = in_class(grammar.n_transitive, subject_class)  # its subject is the noun it modifies
    put("r_V", vocab.verb(rc_verb, subject_plural), is_rc)
    intervening.append((noun_phrase("r", is_rc, opposite, cls=rc_verb // classes % classes)[0], is_rc))

    is_center = construction == CONSTRUCTIONS.index("center")
    levels = 1 + np.minimum(rng.geometric(1 - CENTER_NEST_SHARE, size=n) - 1, max(depth - 1, 0))  # [S] in 1..depth
    modified_class = subject_class  # a CRC's verb takes the noun the CRC modifies as its object (the gap)
    for k in range(1, depth + 1):
        here = is_center & (levels >= k)
        put(f"c{k}_that", vocab.that, here)
        plural, own_class = noun_phrase(f"c{k}", here, opposite if k == 1 else None)
        verb = in_class(grammar.n_transitive // classes, modified_class) * classes + own_class  # (subject, object)
        put(f"c{k}_V", vocab.verb(verb, plural), here)
        intervening.append((plural, here))
        modified_class = own_class

    draw = rng.integers(grammar.n_verbs, size=n)  # transitive below n_transitive; the lemma keeps the subject's class
    transitive = draw < grammar.n_transitive
    first = np.where(transitive, 0, grammar.n_transitive)
    verb_lemma = first + subject_class + classes * ((draw - first) // classes)
    put("V", vocab.verb(verb_lemma, subject_plural))
    noun_phrase("o", transitive, cls=verb_lemma // classes % classes)
    put("dot", vocab.dot)

    attractor = np.zeros(n, dtype=bool)
    for plural, here in intervening:
        attractor |= here & (plural != subject_plural)

    # compact the present slots to positions; a head slot is present whenever its dependents are
    position = np.cumsum(present, axis=1) - 1  # [S, n_slots]
    head_position = np.where(head_slot >= 0, position[:, np.maximum(head_slot, 0)], -1)  # [S, n_slots]
    rows, cols = np.nonzero(present)
    length = grammar.max_length()
    out_tokens = np.full((n, length), PAD, dtype=np.int64)  # [S, L]
    out_heads = np.full((n, length), -1, dtype=np.int64)  # [S, L]
    out_tokens[rows, position[rows, cols]] = tokens[rows, cols]
    out_heads[rows, position[rows, cols]] = head_position[rows, cols]
    relation = np.array([RELATIONS.index("root") if name == "V" else RELATIONS.index("punct") if name == "dot" else
                         _relation(name) for name in order], dtype=np.int64)  # [n_slots]
    out_relations = np.full((n, length), -1, dtype=np.int64)  # [S, L]
    out_relations[rows, position[rows, cols]] = relation[cols]
    return Sentences(tokens=out_tokens, lengths=present.sum(axis=1).astype(np.int64), heads=out_heads,
                     relations=out_relations,
                     verb=position[:, slot["V"]].astype(np.int64), subject=position[:, slot["s_N"]].astype(np.int64),
                     construction=np.array(CONSTRUCTIONS, dtype=object)[construction], attractor=attractor)


def arc_distances(sentences: Sentences, longest: int = 4) -> np.ndarray:
    """Return the share of dependency arcs (every word but the root) spanning 1, 2, ..., longest - 1 words and
    `longest` or more: [longest] summing to 1. Mostly-adjacent arcs let a head that looks a fixed distance away
    score like a parse."""
    positions = np.arange(sentences.heads.shape[1])[None]
    arcs = (positions < sentences.lengths[:, None]) & (sentences.heads >= 0)
    distance = np.minimum(np.abs(sentences.heads - positions)[arcs], longest)
    return np.bincount(distance, minlength=longest + 1)[1:] / max(1, arcs.sum())


def _checked(grammar: Grammar) -> None:
    problems = grammar.check()
    if problems:
        raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))


def sample(grammar: Grammar, n: int, seed: int) -> Sentences:
    """Return n sentences drawn from the grammar, padded to L = grammar.max_length(): tokens and heads [n, L];
    the same (grammar, n, seed) always gives the same arrays."""
    _checked(grammar)
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    rng = np.random.default_rng(stream_seed("grammar", seed))
    shares = [grammar.pp_share, grammar.rc_share, grammar.center_share if grammar.center_depth >= 1 else 0.0]
    bounds = np.cumsum(shares)  # a draw below bounds[i] (and above the previous) picks construction i + 1
    construction = (np.searchsorted(bounds, rng.random(n), side="right") + 1) % 4  # [S] codes; past all: 0, "none"
    subject_plural = rng.random(n) < grammar.plural_share
    return _generate(grammar, rng, construction, subject_plural, force_attractor=False)


@dataclass
class MinimalPairs:
    """P sentence pairs that differ only at `site` (the main verb): `good` agrees with its subject, `bad` does not."""

    good: np.ndarray  # [P, L] int64
    bad: np.ndarray  # [P, L] int64
    lengths: np.ndarray  # [P] int64
    site: np.ndarray  # [P] int64: position of the main verb
    good_token: np.ndarray  # [P] int64
    bad_token: np.ndarray  # [P] int64
    construction: np.ndarray  # [P] str in CONSTRUCTIONS; non-"none" pairs have an attractor of the other number
    subject: np.ndarray  # [P] int64: position of the subject head noun

    def __len__(self) -> int:
        return len(self.lengths)


def minimal_pairs(grammar: Grammar, n_per_construction: int, seed: int) -> MinimalPairs:
    """Return n_per_construction agreement pairs for each construction ("center" only if center_depth >= 1), whatever
    the grammar's shares; subjects alternate singular/plural within each construction (an odd count has one more
    singular); arrays [P, L] with L = grammar.max_length(), P = n_per_construction * n_kinds; in every non-"none"
    pair the noun nearest the subject inside its modifier has the other number (an attractor)."""
    _checked(grammar)
    if n_per_construction < 1:
        raise ValueError(f"n_per_construction must be >= 1 (got {n_per_construction})")
    kinds = [i for i, name in enumerate(CONSTRUCTIONS) if name != "center" or grammar.center_depth >= 1]
    construction = np.repeat(np.array(kinds), n_per_construction)  # [P]
    subject_plural = np.tile(np.arange(n_per_construction) % 2 == 1, len(kinds))  # [P] balanced within each kind
    rng = np.random.default_rng(stream_seed("grammar-pairs", seed))
    sentences = _generate(grammar, rng, construction, subject_plural, force_attractor=True)
    rows = np.arange(len(sentences))
    good_token = sentences.tokens[rows, sentences.verb]
    bad_token = good_token + np.where(subject_plural, -1, 1)  # the same lemma, the other number
    bad = sentences.tokens.copy()
    bad[rows, sentences.verb] = bad_token
    return MinimalPairs(good=sentences.tokens, bad=bad, lengths=sentences.lengths, site=sentences.verb,
                        good_token=good_token, bad_token=bad_token, construction=sentences.construction,
                        subject=sentences.subject)


def render(grammar: Grammar, tokens: np.ndarray, heads: np.ndarray | None = None) -> str:
    """Return one sentence [L] as words ("the/1 dog/4 ..." with head positions when `heads` [L] is given)."""
    words = grammar.words()
    out = []
    for t, token in enumerate(tokens):
        if token == PAD:
            break
        out.append(words[token] + ("" if heads is None else f"/{heads[t]}"))
    return " ".join(out)
