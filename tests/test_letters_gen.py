"""Letter-counting generator: hand-checked BPE pieces and subsets, counts, split, tokenizer size, knobs, round trip."""

import numpy as np
import pytest

from ontogeny.tasks.letters_gen import (
    BOS,
    EOS,
    PAD,
    QUESTION,
    Letters,
    WordTokenizer,
    build,
    inside_shares,
    piece_shares,
    render,
    sample,
    train_bpe,
    word_tables,
)

try:
    import tokenizers
except ImportError:  # the "bpe" tokenizer is the optional extra ontogeny[hf]
    tokenizers = None
needs_tokenizers = pytest.mark.skipif(tokenizers is None, reason="needs Hugging Face tokenizers: ontogeny[hf]")

# Hand-trained BPE on this lexicon (no pre-tokenizer, alphabet abc, vocab_size 5 = 3 letters + 2 merges):
# pair counts before any merge: ab 8, ca 3, ba 2, bc 2, bb 1  -> merge 1: a + b = "ab"
# then: (c, ab) 3, (ab, c) 2, (ab, ab) 1, (ab, b) 1, (b, a) 1 -> merge 2: c + ab = "cab"
HAND_LEXICON = ["abab", "abba", "ab", "cab", "abcab", "cabc"]
# word -> pieces; letter -> (count, n_tokens_with_letter, inside_multichar), all by hand
HAND_EXPECTED = {
    "abcab": (["ab", "cab"], {"a": (2, 2, True), "b": (2, 2, True), "c": (1, 1, True)}),
    "abba": (["ab", "b", "a"], {"a": (2, 2, True), "b": (2, 2, True), "c": (0, 0, False)}),
    "bac": (["b", "a", "c"], {"a": (1, 1, False), "b": (1, 1, False), "c": (1, 1, False)}),  # never trained on
    "bcab": (["b", "cab"], {"a": (1, 1, True), "b": (2, 2, True), "c": (1, 1, True)}),
}


@needs_tokenizers
def test_hand_trained_bpe_pieces_and_subsets():
    tokenizer = train_bpe(HAND_LEXICON, "abc", vocab_size=5)
    assert sorted(tokenizer.pieces) == ["a", "ab", "b", "c", "cab"]
    words = list(HAND_EXPECTED)
    tables = word_tables(words, tokenizer)
    for w, word in enumerate(words):
        pieces, per_letter = HAND_EXPECTED[word]
        assert [tokenizer.pieces[i] for i in tables.pieces[w, : tables.n_pieces[w]]] == pieces, word
        for a, letter in enumerate("abc"):
            count, n_tokens, inside = per_letter[letter]
            assert tables.count[w, a] == count, (word, letter)
            assert tables.n_tokens_with_letter[w, a] == n_tokens, (word, letter)
            assert bool(tables.inside_multichar[w, a]) == inside, (word, letter)


@needs_tokenizers
def test_piece_shares_by_hand():
    tokenizer = train_bpe(HAND_LEXICON, "abc", vocab_size=5)  # abab=ab|ab abba=ab|b|a ab cab abcab=ab|cab cabc=cab|c
    tables = word_tables(HAND_LEXICON + ["bac"], tokenizer)
    probs = np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.1])  # over the six training words; "bac" is a test word
    share = dict(zip(tokenizer.pieces, piece_shares(tables, probs, len(tokenizer.pieces))))
    assert share == pytest.approx({"ab": 0.8, "cab": 0.3, "a": 0.2, "b": 0.2, "c": 0.1})
    inside = inside_shares(tables, tokenizer, np.array([share[p] for p in tokenizer.pieces]))  # [W, A]
    np.testing.assert_allclose(inside[4], [0.3, 0.3, 0.3])  # abcab: a and b in ab (0.8) and cab (0.3): the rarer
    np.testing.assert_allclose(inside[1], [0.8, 0.8, np.nan])  # abba: a, b inside ab; no c
    assert np.isnan(inside[6]).all()  # bac: one piece per letter


@needs_tokenizers
def test_bpe_counts_weigh_the_words():
    assert "ab" in train_bpe(["ab", "bc"], "abc", vocab_size=4, counts=[5, 1]).pieces
    assert "bc" in train_bpe(["ab", "bc"], "abc", vocab_size=4, counts=[1, 5]).pieces


def test_zipf_words_in_training_only():
    knobs = Letters(tokenizer="char", n_words=500, n_train_words=400, word_zipf=1.0)
    probs = knobs.word_probs()
    assert probs.sum() == pytest.approx(1) and probs[0] / probs[1] == pytest.approx(2.0)
    lexicon = build(knobs, seed=0)
    drawn = sample(lexicon, "train", 20_000, seed=1, weighted=True).word
    first = (drawn == 0).mean()  # P = 1 / H(400) = 0.152
    assert abs(first - probs[0]) < 4 * np.sqrt(probs[0] * (1 - probs[0]) / 20_000)
    assert (drawn < 400).all()
    uniform = sample(lexicon, "train", 20_000, seed=1).word  # eval prompts stay uniform over the training words
    assert abs((uniform == 0).mean() - 1 / 400) < 0.002
    flat = build(Letters(tokenizer="char", n_words=500, n_train_words=400), seed=0)
    assert np.array_equal(sample(flat, "train", 300, seed=2, weighted=True).tokens,
                          sample(flat, "train", 300, seed=2).tokens)  # word_zipf 0: drawn exactly as before


def test_char_tokenizer_never_multichar():
    lexicon = build(Letters(tokenizer="char", n_words=500, n_train_words=400), seed=3)
    prompts = sample(lexicon, "train", 2000, seed=0)
    assert not prompts.inside_multichar.any()
    assert (prompts.n_tokens_with_letter == prompts.count).all()  # one token per letter occurrence
    assert (prompts.n_pieces == [len(lexicon.words[w]) for w in prompts.word]).all()


@pytest.mark.parametrize("kind", ["char", pytest.param("bpe", marks=needs_tokenizers)])
def test_prompts_match_python_counts_and_layout(kind):
    lexicon = build(Letters(tokenizer=kind), seed=0)
    vocab, letters = lexicon.vocabulary, lexicon.knobs.letters
    for split in ("train", "test"):
        prompts = sample(lexicon, split, 2000, seed=1)
        words = [lexicon.words[w] for w in prompts.word]
        asked = [letters[a] for a in prompts.letter]
        assert prompts.count.tolist() == [word.count(letter) for word, letter in zip(words, asked)]
        # the tokens read back: the asked letter, the word spelled by its pieces, the count digit, <eos>, pads
        for row in range(50):
            tokens, answer = prompts.tokens[row], prompts.answer[row]
            assert tokens[[0, 1, 2, 4]].tolist() == [BOS, 3, 4, 5]  # <bos> how many _ in
            assert tokens[3] == vocab.letter(prompts.letter[row])
            pieces = tokens[5 : answer - 1] - vocab.first_piece
            assert "".join(lexicon.tokenizer.pieces[i] for i in pieces) == words[row]
            assert tokens[answer - 1] == QUESTION and tokens[answer] == vocab.digit(prompts.count[row])
            assert tokens[answer + 1] == EOS and (tokens[answer + 2 :] == PAD).all()
            assert prompts.lengths[row] == answer + 2
            text = render(lexicon, tokens)
            assert text.replace("|", "").split()[5] == words[row] and text.endswith(f"? {prompts.count[row]} <eos>")
        assert prompts.tokens.max() < vocab.size and len(vocab.words()) == vocab.size
    assert 0.45 < (prompts.count > 0).mean() < 0.55  # half the prompts ask a letter in the word


@pytest.mark.parametrize("share", [0.2, 0.5, 0.9])
def test_present_share_sets_the_nonzero_counts(share):
    # 26 letters, words of <= 8 letters: a uniform letter would occur in the word less than a third of the time
    lexicon = build(Letters(n_letters=26, tokenizer="char", present_share=share), seed=0)
    prompts = sample(lexicon, "train", 4000, seed=0)
    assert abs((prompts.count > 0).mean() - share) < 0.03
    only_two = build(Letters(n_letters=2, max_syllables=4, n_words=4, n_train_words=3, tokenizer="char",
                             present_share=share), seed=0)  # every word holds both letters: nothing absent to ask
    fallback = sample(only_two, "train", 1000, seed=0)
    assert (fallback.count > 0).all() and abs(fallback.letter.mean() - 0.5) < 0.1  # either letter, uniformly


def test_train_and_test_words_disjoint():
    knobs = Letters(tokenizer="char", n_words=300, n_train_words=200)
    lexicon = build(knobs, seed=5)
    assert len(set(lexicon.words)) == 300  # distinct
    train = sample(lexicon, "train", 3000, seed=0)
    test = sample(lexicon, "test", 3000, seed=0)
    assert train.word.max() < 200 and test.word.min() >= 200
    assert not {lexicon.words[w] for w in train.word} & {lexicon.words[w] for w in test.word}
    assert len(np.unique(test.word)) == 100  # 3000 draws reach every test word


def test_lexicon_shape():
    knobs = Letters(n_letters=6, max_syllables=3, n_words=400, n_train_words=300, tokenizer="char")  # 2 vowels a, e
    words = build(knobs, seed=0).words
    for word in words:  # consonant-vowel syllables
        assert len(word) % 2 == 0 and all(word[i] in "ae" for i in range(1, len(word), 2))
        assert all(word[i] in "bcdf" for i in range(0, len(word), 2))
    assert np.bincount([len(w) // 2 for w in words]).tolist() == [0, 8, 64, 328]  # 8 syllables; capped, rest longer
    full = Letters(n_letters=2, max_syllables=4, n_words=4, n_train_words=3, tokenizer="char")  # "ba" only: capacity 4
    assert sorted(build(full, seed=0).words) == ["ba", "baba", "bababa", "babababa"]


@needs_tokenizers
def test_larger_bpe_vocabulary_gives_fewer_tokens():
    means = [build(Letters(vocab_size=size), seed=0).tables.n_pieces.mean() for size in (10, 24, 48, 96)]
    assert means[0] == pytest.approx(np.mean([len(w) for w in build(Letters(tokenizer="char"), seed=0).words]))
    assert means[0] > means[1] > means[2] > means[3]


@pytest.mark.parametrize(("knobs", "field"), [
    (Letters(vocab_size=8), "vocab_size"),  # 10 letters
    (Letters(n_words=1600), "n_words"),  # no test words
    (Letters(n_letters=3, max_syllables=2, n_words=10, n_train_words=5), "n_words"),  # 2 + 4 words possible
    (Letters(max_syllables=10), "max_syllables"),  # counts up to 10: two digits
    (Letters(n_letters=1), "n_letters"),
    (Letters(tokenizer="word"), "tokenizer"),
    (Letters(present_share=1.5), "present_share"),
    (Letters(word_zipf=-0.5), "word_zipf"),
])
def test_check_names_the_bad_knob(knobs, field):
    assert [name for name, _ in knobs.check()] == [field]
    with pytest.raises(ValueError, match=f"^{field}: "):
        build(knobs, seed=0)


def test_good_knobs_pass_check():
    assert Letters().check() == []
    assert Letters(tokenizer="char", vocab_size=2).check() == []  # vocab_size matters only for bpe
    assert Letters(vocab_size=10).check() == []  # the alphabet alone: BPE without merges
    assert Letters(n_letters=3, max_syllables=2, n_words=6, n_train_words=5).check() == []  # exactly the capacity


@pytest.mark.parametrize("kind", ["char", pytest.param("bpe", marks=needs_tokenizers)])
def test_deterministic(kind):
    knobs = Letters(tokenizer=kind, n_words=800, n_train_words=600)
    first, second = build(knobs, seed=7), build(knobs, seed=7)
    assert first.words == second.words and first.tokenizer.to_str() == second.tokenizer.to_str()
    a, b = sample(first, "test", 500, seed=2), sample(second, "test", 500, seed=2)
    for name in ("tokens", "lengths", "answer", "count", "letter", "word", "inside_multichar", "n_tokens_with_letter"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert build(knobs, seed=8).words != first.words
    assert not np.array_equal(sample(first, "test", 500, seed=3).tokens, a.tokens)


@pytest.mark.parametrize("kind", ["char", pytest.param("bpe", marks=needs_tokenizers)])
def test_tokenizer_round_trip(kind):
    knobs = Letters(tokenizer=kind, n_words=800, n_train_words=600)
    lexicon = build(knobs, seed=1)
    loaded = WordTokenizer.from_str(lexicon.tokenizer.to_str())
    assert loaded.kind == kind and loaded.pieces == lexicon.tokenizer.pieces
    assert loaded.encode(lexicon.words) == lexicon.tokenizer.encode(lexicon.words)
    rebuilt = build(knobs, seed=1, tokenizer=loaded)
    assert np.array_equal(sample(rebuilt, "train", 300, seed=0).tokens, sample(lexicon, "train", 300, seed=0).tokens)
    if kind == "bpe":  # the stored text is plain Hugging Face JSON
        hf = tokenizers.Tokenizer.from_str(lexicon.tokenizer.to_str())
        assert [e.ids for e in hf.encode_batch(lexicon.words)] == lexicon.tokenizer.encode(lexicon.words)


def test_words_outside_the_alphabet_refused():
    with pytest.raises(ValueError, match="outside the alphabet"):
        WordTokenizer("char", "abc").encode(["abd"])
