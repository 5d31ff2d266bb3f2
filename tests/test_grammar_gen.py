"""Grammar generator: gold trees, agreement, labels read back from the tokens, shares, minimal pairs, n-gram counts."""

from collections import Counter

import numpy as np
import pytest

from ontogeny.tasks.grammar_gen import (
    BOS,
    CONSTRUCTIONS,
    PAD,
    RELATIONS,
    SPECIALS,
    Grammar,
    NgramModel,
    arc_distances,
    minimal_pairs,
    render,
    sample,
)

GRAMMARS = {
    "default": Grammar(),
    "deep": Grammar(pp_share=0.2, rc_share=0.2, center_share=0.5, center_depth=3, adjective_share=0.5),
    "no-center": Grammar(n_nouns=3, n_verbs=3, n_adjectives=1, n_prepositions=1, center_depth=0, plural_share=0.3),
}


def read_construction(grammar: Grammar, tokens: np.ndarray, subject: int, verb: int) -> tuple[str, bool]:
    """Read the construction and the attractor label back from the words between subject and main verb."""
    vocab = grammar.vocabulary()
    between = tokens[subject + 1 : verb]
    if len(between) == 0:
        kind = "none"
    elif between[0] >= vocab.first_preposition:
        kind = "pp"
    elif between[0] == vocab.that and vocab.is_verb(between[1]):
        kind = "rc"
    else:
        assert between[0] == vocab.that and between[1] == vocab.the
        kind = "center"
    nouns = between[vocab.is_noun(between)]
    attractor = bool((vocab.plural(nouns) != vocab.plural(tokens[subject])).any())
    return kind, attractor


def assert_well_formed(grammar: Grammar, sentences, n_checked: int) -> None:
    """Trees, agreement and labels of every sentence, plus the verb-by-verb agreement of the first n_checked."""
    vocab = grammar.vocabulary()
    tokens, heads, lengths = sentences.tokens, sentences.heads, sentences.lengths
    S, L = tokens.shape
    assert L == grammar.max_length()
    valid = np.arange(L) < lengths[:, None]  # [S, L]
    assert (tokens[~valid] == PAD).all() and (heads[~valid] == -1).all() and (tokens[valid] != PAD).all()
    assert ((heads == -1) & valid).sum(axis=1).tolist() == [1] * S  # exactly one root
    rows = np.arange(S)
    assert (heads[rows, sentences.verb] == -1).all() and vocab.is_verb(tokens[rows, sentences.verb]).all()
    assert (heads[rows, sentences.subject] == sentences.verb).all()
    assert vocab.is_noun(tokens[rows, sentences.subject]).all()
    assert (heads[valid] < lengths[np.nonzero(valid)[0]]).all()  # heads point inside the sentence
    # a tree: following heads from any token reaches the root within L steps (no cycles)
    node = np.where(valid, np.arange(L), -1)
    for _ in range(L):
        node = np.where(node >= 0, heads[rows[:, None], np.maximum(node, 0)], -1)
    assert (node == -1).all()
    # the main verb agrees with the subject
    assert (vocab.plural(tokens[rows, sentences.verb]) == vocab.plural(tokens[rows, sentences.subject])).all()
    for s in range(S):
        kind, attractor = read_construction(grammar, tokens[s], sentences.subject[s], sentences.verb[s])
        assert (kind, attractor) == (sentences.construction[s], sentences.attractor[s]), render(grammar, tokens[s])
    for s in range(min(S, n_checked)):  # every word's head has the right class; every verb agrees with its subject
        words, head = tokens[s, : lengths[s]], heads[s, : lengths[s]]
        for t, (word, h) in enumerate(zip(words, head)):
            if word in (vocab.the,) or vocab.first_adjective <= word < vocab.first_preposition:
                assert h > t and vocab.is_noun(words[h])
            elif word >= vocab.first_preposition:
                assert vocab.is_noun(words[h]) and h > t
            elif word in (vocab.that, vocab.dot):
                assert vocab.is_verb(words[h])
            elif vocab.is_verb(word) and h >= 0:  # an RC or CRC verb: modifies a noun before it
                assert vocab.is_noun(words[h]) and h < t
                own_subject = [c for c in range(t) if head[c] == t and vocab.is_noun(words[c])]
                subject = h if words[t - 1] == vocab.that else own_subject[0]  # RC: the modified noun; CRC: its own
                assert vocab.plural(word) == vocab.plural(words[subject]), render(grammar, words, head)
        arcs = [(min(t, h), max(t, h)) for t, h in enumerate(head) if h >= 0]  # the trees are projective
        assert not any(a < c < b < d for a, b in arcs for c, d in arcs)


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_sampled_sentences_are_trees_that_agree_and_match_their_labels(name):
    grammar = GRAMMARS[name]
    sentences = sample(grammar, 3000, seed=4)
    assert_well_formed(grammar, sentences, n_checked=300)
    assert set(sentences.construction) == {c for c in CONSTRUCTIONS if c != "center" or grammar.center_depth}
    assert sentences.attractor.any() and not sentences.attractor[sentences.construction == "none"].any()


def test_hand_decoded_sentences():
    grammar = Grammar(n_nouns=4, n_verbs=4, n_adjectives=2, n_prepositions=2, center_depth=2, center_share=0.3,
                      pp_share=0.25, rc_share=0.25)
    sentences = sample(grammar, 40, seed=3)
    first = {kind: next(s for s in range(40) if sentences.construction[s] == kind) for kind in CONSTRUCTIONS}
    shown = {kind: render(grammar, sentences.tokens[s], sentences.heads[s]) for kind, s in first.items()}
    # checked by hand (word/head position, from 0): det, adj -> noun; subject -> root verb; "that" -> its clause's
    # verb; an RC/CRC verb -> the noun it modifies; a CRC's own subject -> the CRC verb; "." -> root
    assert shown["none"] == "the/2 red/2 dog/3 runs/-1 ./3"
    assert shown["pp"] == "the/1 birds/5 behind/4 the/4 dogs/1 run/-1 ./5"
    assert shown["rc"] == "the/2 red/2 birds/7 that/4 chase/2 the/6 fox/4 chase/-1 the/9 bird/7 ./7"
    assert shown["center"] == "the/2 big/2 dog/8 that/7 the/6 red/6 foxes/7 chase/2 chases/-1 the/10 birds/8 ./8"
    deep = render(grammar, sentences.tokens[2], sentences.heads[2])
    assert deep == ("the/1 birds/11 that/10 the/4 fox/10 that/9 the/8 red/8 dogs/9 chase/4 chases/1 see/-1 the/13 "
                    "cat/11 ./11")  # birds ... see; fox ... chases; dogs ... chase
    assert [sentences.attractor[first[k]] for k in CONSTRUCTIONS] == [False, False, True, True]
    assert [sentences.verb[first[k]] for k in CONSTRUCTIONS] == [3, 5, 7, 8]
    assert [sentences.subject[first[k]] for k in CONSTRUCTIONS] == [2, 1, 2, 2]


def test_hand_labelled_relations_and_arc_distances():
    grammar = Grammar(n_nouns=4, n_verbs=4, n_adjectives=2, n_prepositions=2, center_depth=2, center_share=0.3,
                      pp_share=0.25, rc_share=0.25)
    sentences = sample(grammar, 40, seed=3)  # the sentences decoded by hand above
    first = {kind: next(s for s in range(40) if sentences.construction[s] == kind) for kind in CONSTRUCTIONS}

    def labels(s):
        return [RELATIONS[r] for r in sentences.relations[s, : sentences.lengths[s]]]

    assert labels(first["none"]) == ["det", "amod", "nsubj", "root", "punct"]  # the red dog runs .
    assert labels(first["pp"]) == ["det", "nsubj", "case", "det", "nmod", "root", "punct"]
    assert labels(first["rc"]) == ["det", "amod", "nsubj", "nsubj", "acl", "det", "obj", "root", "det", "obj",
                                   "punct"]  # the red birds that chase the fox chase the bird .
    assert labels(first["center"]) == ["det", "amod", "nsubj", "obj", "det", "amod", "nsubj", "acl", "root", "det",
                                       "obj", "punct"]  # the big dog that the red foxes chase chases the birds .
    assert (sentences.relations[sentences.tokens == PAD] == -1).all()
    assert (sentences.relations[sentences.tokens != PAD] >= 0).all()
    one = sample(grammar, 40, seed=3)
    for field in ("tokens", "heads", "relations", "lengths"):
        setattr(one, field, getattr(one, field)[first["none"]:first["none"] + 1])
    np.testing.assert_allclose(arc_distances(one), [0.75, 0.25, 0.0, 0.0])  # the->dog 2; red, dog, . 1
    shares = arc_distances(sample(Grammar(), 2000, seed=0))
    assert shares.sum() == pytest.approx(1) and 0.4 < shares[0] < 0.6


def test_shares():
    only_pp = sample(Grammar(pp_share=1.0, rc_share=0.0, center_share=0.0), 500, seed=0)
    vocab = Grammar().vocabulary()
    assert (only_pp.construction == "pp").all()
    assert (only_pp.tokens[:, 2:4].max(axis=1) >= vocab.first_preposition).all()  # "the [adj] N P"
    bare = sample(Grammar(pp_share=0, rc_share=0, center_share=0, adjective_share=0), 500, seed=0)
    assert (bare.construction == "none").all() and not bare.attractor.any() and (bare.verb == 2).all()
    assert not ((bare.tokens >= vocab.first_adjective) & (bare.tokens < vocab.first_preposition)).any()
    no_depth = Grammar(center_depth=0, center_share=1.0, pp_share=0, rc_share=0)
    assert (sample(no_depth, 200, seed=0).construction == "none").all()  # depth 0 disables center embedding

    grammar = Grammar(pp_share=0.3, rc_share=0.2, center_share=0.15, center_depth=2, plural_share=0.3,
                      adjective_share=0.4)
    n = 5000
    sentences = sample(grammar, n, seed=1)

    def near(observed: float, p: float, count: int) -> bool:
        return abs(observed - p) <= 4 * np.sqrt(p * (1 - p) / count)

    for kind, p in (("pp", 0.3), ("rc", 0.2), ("center", 0.15), ("none", 0.35)):
        assert near(np.mean(sentences.construction == kind), p, n), kind
    subjects = sentences.tokens[np.arange(n), sentences.subject]
    assert near(vocab.plural(subjects).mean(), 0.3, n)
    assert near(np.mean(sentences.tokens[:, 1] < vocab.first_verb), 1 - 0.4, n)  # word 1: a noun unless an adjective
    center = sentences.construction == "center"
    deep = (sentences.tokens[center] == vocab.that).sum(axis=1) == 2  # depth 2: two "that"
    assert near(deep.mean(), 0.5, center.sum())


@pytest.mark.parametrize("classes", [2, 4])
def test_selection_classes_hold_on_every_arc_and_leave_the_rest_uniform(classes):
    grammar = Grammar(n_verbs=8 if classes == 2 else 32, pp_share=0.2, rc_share=0.3, center_share=0.4,
                      center_depth=3, adjective_share=0.6, n_classes=classes)
    vocab, n_transitive = grammar.vocabulary(), grammar.n_transitive
    sentences = sample(grammar, 3000, seed=2)
    assert_well_formed(grammar, sentences, n_checked=300)

    def noun_class(token):
        return (token - vocab.first_noun) // 2 % classes

    def verb_classes(token):  # (subject class, object class or None), from the lemma as the docstring defines it
        lemma = (token - vocab.first_verb) // 2
        return (lemma % classes, lemma // classes % classes) if lemma < n_transitive else \
            ((lemma - n_transitive) % classes, None)

    checked = Counter()
    for s in range(len(sentences)):
        words, heads = sentences.tokens[s], sentences.heads[s]
        relations = [RELATIONS[r] for r in sentences.relations[s, : sentences.lengths[s]]]
        for t, relation in enumerate(relations):
            word, head = words[t], words[heads[t]]
            if relation == "amod":
                assert (word - vocab.first_adjective) % classes == noun_class(head)
            elif relation in ("nsubj", "obj") and vocab.is_noun(word):  # a verb's own subject or object
                assert verb_classes(head)[relation == "obj"] == noun_class(word), render(grammar, words, heads)
            elif relation == "acl":  # the modified noun is the RC verb's subject, the CRC verb's object (the gap)
                that = relations[t - 1] if words[t - 1] == vocab.that else relations[int(np.flatnonzero(
                    (heads == t) & (words == vocab.that))[0])]
                assert verb_classes(word)[that == "obj"] == noun_class(head), render(grammar, words, heads)
            else:
                continue
            checked[relation] += 1
    assert min(checked.values()) > 500 and set(checked) == {"amod", "nsubj", "obj", "acl"}
    # within what the class allows, every word is as likely: main verbs given their subject's class
    rows = np.arange(len(sentences))
    verbs, subjects = sentences.tokens[rows, sentences.verb], sentences.tokens[rows, sentences.subject]
    lemmas = (verbs - vocab.first_verb) // 2
    assert abs(np.mean(lemmas < n_transitive) - n_transitive / grammar.n_verbs) < 0.04  # transitivity as before
    for cls in range(classes):
        counts = np.bincount(lemmas[noun_class(subjects) == cls], minlength=grammar.n_verbs)
        allowed = np.array([verb_classes(vocab.verb(lemma, 0))[0] == cls for lemma in range(grammar.n_verbs)])
        assert (counts[~allowed] == 0).all()
        expected = counts.sum() / allowed.sum()
        assert np.abs(counts[allowed] - expected).max() < 5 * np.sqrt(expected)
    assert Grammar(n_classes=2).check() == [] and [n for n, _ in Grammar(n_classes=4).check()] == ["n_verbs"]
    assert [n for n, _ in Grammar(n_classes=3, n_nouns=15, n_verbs=24, n_adjectives=3).check()] == ["n_verbs"]
    assert [n for n, _ in Grammar(n_classes=0).check()] == ["n_classes"]


def test_determinism():
    grammar = GRAMMARS["deep"]
    a, b, c = sample(grammar, 300, seed=7), sample(grammar, 300, seed=7), sample(grammar, 300, seed=8)
    for field in ("tokens", "lengths", "heads", "verb", "subject", "construction", "attractor"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.tokens, c.tokens)
    p, q, r = minimal_pairs(grammar, 20, seed=7), minimal_pairs(grammar, 20, seed=7), minimal_pairs(grammar, 20, 8)
    assert np.array_equal(p.good, q.good) and np.array_equal(p.bad, q.bad) and not np.array_equal(p.good, r.good)


@pytest.mark.parametrize("name", list(GRAMMARS))
def test_minimal_pairs(name):
    grammar = GRAMMARS[name]
    vocab = grammar.vocabulary()
    pairs = minimal_pairs(grammar, 50, seed=2)
    kinds = [c for c in CONSTRUCTIONS if c != "center" or grammar.center_depth]
    assert Counter(pairs.construction) == {kind: 50 for kind in kinds}
    rows = np.arange(len(pairs))
    differ = pairs.good != pairs.bad
    assert (differ.sum(axis=1) == 1).all() and differ[rows, pairs.site].all()
    assert (pairs.good[rows, pairs.site] == pairs.good_token).all()
    assert (pairs.bad[rows, pairs.site] == pairs.bad_token).all()
    subject_plural = vocab.plural(pairs.good[rows, pairs.subject])
    assert (vocab.plural(pairs.good_token) == subject_plural).all()
    assert (vocab.plural(pairs.bad_token) != subject_plural).all()
    assert ((pairs.good_token - vocab.first_verb) // 2 == (pairs.bad_token - vocab.first_verb) // 2).all()  # same lemma
    assert (pairs.good[rows, pairs.lengths - 1] == vocab.dot).all()
    for kind in kinds:  # balanced numbers within each construction
        assert subject_plural[pairs.construction == kind].sum() == 25
    for p in rows:
        read, attractor = read_construction(grammar, pairs.good[p], pairs.subject[p], pairs.site[p])
        assert read == pairs.construction[p] and attractor == (read != "none")


@pytest.mark.parametrize(("knobs", "fields"), [
    ({"pp_share": -0.1}, ["pp_share"]), ({"rc_share": 1.5}, ["rc_share", "pp_share"]),  # and the sum is > 1
    ({"rc_share": 0.5, "center_share": 0.6}, ["pp_share"]), ({"center_depth": 5}, ["center_depth"]),
    ({"n_nouns": 1}, ["n_nouns"]), ({"n_verbs": 1}, ["n_verbs"]), ({"n_adjectives": 0}, ["n_adjectives"]),
    ({"n_prepositions": 0}, ["n_prepositions"]), ({"plural_share": 2.0}, ["plural_share"]),
    ({"adjective_share": -1.0}, ["adjective_share"]), ({"n_nouns": 1, "center_depth": -1}, ["n_nouns", "center_depth"]),
])
def test_check_names_the_bad_knob(knobs, fields):
    problems = Grammar(**knobs).check()
    assert [name for name, _ in problems] == fields
    assert all(message for _, message in problems)
    with pytest.raises(ValueError, match=fields[0]):
        sample(Grammar(**knobs), 10, seed=0)


def test_check_passes_good_grammars():
    assert all(not grammar.check() for grammar in GRAMMARS.values())
    assert Grammar(pp_share=0.5, rc_share=0.3, center_share=0.2).check() == []


def test_words():
    for grammar in [*GRAMMARS.values(), Grammar(n_nouns=40, n_verbs=21, n_adjectives=9, n_prepositions=7)]:
        words = grammar.words()
        assert len(words) == len(set(words)) == grammar.vocab_size == grammar.vocabulary().size
        assert tuple(words[:3]) == SPECIALS
    words = Grammar().words()
    vocab = Grammar().vocabulary()
    assert [words[vocab.noun(5, 0)], words[vocab.noun(3, 1)], words[vocab.verb(0, 0)], words[vocab.verb(0, 1)]] == \
        ["pig", "foxes", "sees", "see"]


@pytest.mark.parametrize("kind", ["pp", "rc", "center", "mixed"])
def test_max_length_is_never_exceeded_and_is_reached(kind):
    shares = {"pp": (1, 0, 0), "rc": (0, 1, 0), "center": (0, 0, 1), "mixed": (1 / 3, 1 / 3, 1 / 3)}[kind]
    grammar = Grammar(pp_share=shares[0], rc_share=shares[1], center_share=shares[2], center_depth=3,
                      adjective_share=1.0, plural_share=1.0)
    sentences = sample(grammar, 20_000, seed=5)
    assert sentences.lengths.max() == grammar.max_length() == sentences.tokens.shape[1]
    assert Grammar(pp_share=0, rc_share=0, center_share=0, adjective_share=0).max_length() == 6  # the N V the N .


# ---- n-gram ----------------------------------------------------------------------------------------------------

CORPUS = [[3, 4, 5], [3, 5], [4, 4, 5, 3]]  # a vocabulary of 6: ids 3, 4, 5 are words


def padded(corpus):
    tokens = np.zeros((len(corpus), max(map(len, corpus))), dtype=np.int64)
    for s, sentence in enumerate(corpus):
        tokens[s, : len(sentence)] = sentence
    return tokens, np.array([len(sentence) for sentence in corpus])


def counted(corpus, order):
    """Direct counting: {context tuple: Counter(next token)} for every context length below `order`."""
    table = {}
    for sentence in corpus:
        history = [BOS] * (order - 1) + sentence
        for t, token in enumerate(sentence):
            for k in range(order):
                context = tuple(history[t + order - 1 - k : t + order - 1])
                table.setdefault(context, Counter())[token] += 1
    return table


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_matches_direct_counting(order):
    tokens, lengths = padded(CORPUS)
    model = NgramModel(order, vocab_size=6).fit(tokens, lengths)
    table = counted(CORPUS, order)
    queries = [[3, 4, 4, 5, 5], [5, 5, 3], [4]]  # "5 5" and "5" as a bigram context were never seen
    q_tokens, q_lengths = padded(queries)
    probs = model.next_token_probs(q_tokens, q_lengths)  # [S, L, V]
    assert probs.shape == (3, 5, 6)
    for s, sentence in enumerate(queries):
        history = [BOS] * (order - 1) + sentence
        for t in range(5):
            if t >= len(sentence):
                assert (probs[s, t] == 0).all()
                continue
            k = order - 1
            while tuple(history[t + order - 1 - k : t + order - 1]) not in table:  # back off
                k -= 1
            counts = table[tuple(history[t + order - 1 - k : t + order - 1])]
            expected = np.array([counts[v] for v in range(6)]) / sum(counts.values())
            assert np.allclose(probs[s, t], expected)
            assert np.isclose(probs[s, t].sum(), 1.0)


def test_ngram_by_hand():
    tokens, lengths = padded(CORPUS)
    bigram = NgramModel(2, vocab_size=6).fit(tokens, lengths)
    probs = bigram.next_token_probs(np.array([[4, 4, 5, 5]]), np.array([4]))[0]  # [L, V]
    assert np.allclose(probs[0], [0, 0, 0, 2 / 3, 1 / 3, 0])  # after <bos>: 3, 3, 4
    assert np.allclose(probs[1], [0, 0, 0, 0, 1 / 3, 2 / 3])  # after 4: 5, 4, 5
    assert np.allclose(probs[2], probs[1])
    assert np.allclose(probs[3], [0, 0, 0, 1, 0, 0])  # after 5: only "5 3"
    only_five = NgramModel(2, vocab_size=6).fit(np.array([[3, 5]]), np.array([2]))
    backed_off = only_five.next_token_probs(np.array([[4, 4]]), np.array([2]))[0]  # "4" never a context: unigram
    assert np.allclose(backed_off[1], [0, 0, 0, 1 / 2, 0, 1 / 2])
    unigram = NgramModel(1, vocab_size=6).fit(tokens, lengths).next_token_probs(tokens, lengths)
    assert np.allclose(unigram[0, 0], np.array([0, 0, 0, 3, 3, 3]) / 9)


def test_ngram_on_grammar_data():
    grammar = GRAMMARS["default"]
    corpus, other = sample(grammar, 4000, seed=0), sample(grammar, 500, seed=1)
    valid = np.arange(corpus.tokens.shape[1]) < corpus.lengths[:, None]  # [S, L]
    losses = []
    for order in (1, 2, 4):
        model = NgramModel(order, grammar.vocab_size).fit(corpus.tokens, corpus.lengths)
        probs = model.next_token_probs(corpus.tokens, corpus.lengths)  # in-sample: every token was counted
        assert np.allclose(probs[valid].sum(axis=1), 1.0) and (probs[~valid] == 0).all()
        losses.append(-np.log(np.take_along_axis(probs, corpus.tokens[..., None], axis=2)[..., 0][valid]).mean())
        other_probs = model.next_token_probs(other.tokens, other.lengths)  # unseen sentences: rows still sum to 1
        assert np.allclose(other_probs.sum(axis=2), np.arange(other.tokens.shape[1]) < other.lengths[:, None])
    assert losses[0] > losses[1] > losses[2]  # longer contexts predict this language better


def test_ngram_rejects_bad_input():
    with pytest.raises(ValueError, match="order"):
        NgramModel(0, 6)
    with pytest.raises(ValueError, match="fit"):
        NgramModel(2, 6).next_token_probs(np.array([[3]]), np.array([1]))
    with pytest.raises(ValueError, match="tokens must lie"):
        NgramModel(2, 6).fit(np.array([[7]]), np.array([1]))
