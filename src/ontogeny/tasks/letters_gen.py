"""Letter counting under different word tokenizers: a pseudo-word lexicon, its tokenizer and counting prompts.

Serves the letter-counting task (the "strawberry" problem): a model that sees a word as multi-letter
tokens must know which letters each token holds to count them, so accuracy is read per subset of how the asked
letter sits in the word's tokens (`inside_multichar`, `n_tokens_with_letter`).

The lexicon: `n_words` distinct pseudo-words of 1..max_syllables consonant-vowel syllables over the first
`n_letters` lowercase letters (vowels are those among a, e, i, o, u), so BPE finds recurring multi-letter units.
Word lengths are spread evenly over the syllable counts (a length that has fewer possible words than its share
gives the rest to longer ones). The lexicon is shuffled by the seed: its first `n_train_words` words are the
training words, the rest the test words, never seen in training (nor by the tokenizer's trainer).

A letter is a consonant or a vowel, so it occurs at most once per syllable: a count is at most max_syllables <= 9,
one digit token by construction.

Training prompts draw the training words uniformly, or with `word_zipf` > 0 by a Zipf law over their (shuffled)
order, P(rank r) ~ r^-word_zipf, as words are used in text; evaluation prompts stay uniform over their words.

The word tokenizer is "char" (one token per letter) or "bpe": Hugging Face `tokenizers` BPE trained on the training
words with the whole alphabet as initial alphabet, `vocab_size` pieces in all (alphabet + merges; fewer if the
words run out of pairs), no normalizer, no pre-tokenizer (a word is never split before BPE) and no special tokens
(every word lies in the alphabet, so it needs no <unk>). With `word_zipf` > 0 the trainer sees a corpus of
BPE_CORPUS word occurrences in the training proportions (every training word at least once), so frequent words
become whole pieces and the pieces of a large vocabulary are rare, as in a tokenizer trained on text.

A piece's training share is the probability that a training prompt's word holds it (`Lexicon.piece_share`); a
prompt's `piece_share` is that of the rarest multi-letter piece holding the asked letter (NaN when none does): the
pieces too rare to learn their spelling are where counting should fail (the "strawberry" question).

A prompt for a causal LM, one token per item:

    <bos> how many <letter> in <word pieces...> ? <count> <eos>          e.g.  <bos> how many 'a' in ba|na|na ? 3 <eos>

The model's token ids, one shared space (`Vocabulary`):
    0..2                      <pad> <bos> <eos>
    3..6                      how many in ?
    7..7+A-1                  the asked letter, one token per letter of the alphabet ('a', 'b', ...)
    first_digit..+9           the counts 0..9
    first_piece..size-1       the word tokenizer's pieces in its own id order (for "char": the letters again)
The asked-letter tokens are distinct from the word pieces, also for "char": the model must learn which pieces
hold the letter it is asked about. The digits come before the pieces so their ids do not depend on the tokenizer.

Count distribution: with probability `present_share` (default 1/2) a prompt asks a letter drawn uniformly from the
distinct letters of the word, else one drawn uniformly from the letters absent from it (if none is absent, a
present one), so count 0 is about half of the prompts, not most of them.

Subsets: BPE merges the consonant-vowel syllables first, so once vocab_size >= n_letters + n_syllables (31 for the
defaults, measured) every present letter sits inside a multi-letter piece (inside_multichar == count > 0) and only
n_tokens_with_letter < count (a letter twice in one piece, as 'a' in "jaba"; ~1% at vocab_size 48) still splits the
prompts; a vocab_size between n_letters and n_letters + n_syllables mixes both kinds within one tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..seeds import stream_seed

__all__ = ["PROMPT_WORDS", "RARE", "SHARE_BINS", "SPECIALS", "TOKENIZERS", "Letters", "Lexicon", "Prompts",
           "Vocabulary", "WordTables", "WordTokenizer", "build", "inside_shares", "piece_shares", "render", "sample",
           "train_bpe", "word_tables"]

SPECIALS = ("<pad>", "<bos>", "<eos>")  # token ids 0, 1, 2
PAD, BOS, EOS = 0, 1, 2
PROMPT_WORDS = ("how", "many", "in", "?")  # token ids 3..6
HOW, MANY, IN, QUESTION = 3, 4, 5, 6
TOKENIZERS = ("char", "bpe")
VOWELS = "aeiou"
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
SPLITS = ("train", "test")
# prompts whose letter sits inside a multi-letter piece, by that piece's share of training prompts (the rarest piece,
# if several hold the letter): at 3,000 steps of 64 prompts a share of 1e-4 is ~19 prompts
SHARE_BINS = {"inside_share_below_1e-4": (0.0, 1e-4), "inside_share_1e-4_to_1e-3": (1e-4, 1e-3),
              "inside_share_1e-3_to_1e-2": (1e-3, 1e-2), "inside_share_above_1e-2": (1e-2, np.inf)}
RARE = 1e-3  # inside_rare_piece / inside_common_piece: a piece below / above this share
BPE_CORPUS = 1_000_000  # word occurrences the BPE trainer sees when training words are Zipf-distributed


@dataclass(frozen=True)
class Letters:
    """The knobs of the lexicon, its tokenizer and the prompts (see the module docstring)."""

    n_letters: int = 10  # alphabet = the first n_letters lowercase letters (2..26)
    n_words: int = 2000  # distinct pseudo-words in the lexicon
    n_train_words: int = 1600  # the first n_train_words of the shuffled lexicon are training words, the rest test
    max_syllables: int = 4  # words have 1..max_syllables consonant-vowel syllables; bounds every count (<= 9)
    tokenizer: str = "bpe"  # "char" | "bpe"
    vocab_size: int = 48  # bpe only: pieces in the word tokenizer, alphabet included
    present_share: float = 0.5  # P(a prompt asks a letter that occurs in the word)
    word_zipf: float = 0.0  # training words drawn with P(rank r) ~ r^-word_zipf (0: uniform), BPE trained alike

    @property
    def letters(self) -> str:
        return ALPHABET[: self.n_letters]

    @property
    def n_syllables(self) -> int:
        """Distinct consonant-vowel syllables."""
        vowels = sum(letter in VOWELS for letter in self.letters)
        return vowels * (self.n_letters - vowels)

    def capacity(self) -> int:
        """Return how many distinct words the alphabet and max_syllables allow."""
        return sum(self.n_syllables**s for s in range(1, self.max_syllables + 1))

    def check(self) -> list[tuple[str, str]]:
        """Return [(field, message)] for every out-of-range knob; empty if all are fine."""
        problems = []

        def is_int(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if not is_int(self.n_letters) or not 2 <= self.n_letters <= 26:
            problems.append(("n_letters", f"must be an integer in 2..26 (got {self.n_letters!r})"))
        if not is_int(self.max_syllables) or not 1 <= self.max_syllables <= 9:
            problems.append(("max_syllables", (f"must be an integer in 1..9, so every count is one digit token "
                                               f"(got {self.max_syllables!r})")))
        shape_known = not problems  # the capacity needs a valid alphabet and syllable count
        if not is_int(self.n_train_words) or self.n_train_words < 1:
            problems.append(("n_train_words", f"must be an integer >= 1 (got {self.n_train_words!r})"))
        if not is_int(self.n_words) or (is_int(self.n_train_words) and self.n_words <= self.n_train_words):
            problems.append(("n_words", (f"must be an integer > n_train_words = {self.n_train_words!r}, so some words "
                                         f"are left for test (got {self.n_words!r})")))
        elif shape_known and self.n_words > self.capacity():
            problems.append(("n_words", (f"must be <= {self.capacity()}, the distinct words of {self.n_letters} "
                                         f"letters and <= {self.max_syllables} syllables (got {self.n_words})")))
        if self.tokenizer not in TOKENIZERS:
            problems.append(("tokenizer", f"must be one of {', '.join(TOKENIZERS)} (got {self.tokenizer!r})"))
        elif self.tokenizer == "bpe" and (not is_int(self.vocab_size) or
                                          (is_int(self.n_letters) and self.vocab_size < self.n_letters)):
            problems.append(("vocab_size", (f"must be an integer >= n_letters = {self.n_letters!r} (the alphabet; "
                                            f"the word tokenizer has no special tokens) (got {self.vocab_size!r})")))
        if not 0 <= self.present_share <= 1:
            problems.append(("present_share", f"must be in [0, 1] (got {self.present_share!r})"))
        if not 0 <= self.word_zipf <= 3:
            problems.append(("word_zipf", f"must be in [0, 3] (got {self.word_zipf!r})"))
        return problems

    def word_probs(self) -> np.ndarray:
        """Return [n_train_words] the training distribution over the training words (in lexicon order)."""
        weight = np.arange(1, self.n_train_words + 1, dtype=np.float64) ** -float(self.word_zipf)
        return weight / weight.sum()


# ---- word tokenizers --------------------------------------------------------------------------------------------


class WordTokenizer:
    """Splits words into pieces: "char" (one piece per letter) or "bpe" (a Hugging Face `tokenizers.Tokenizer`).
    `pieces[i]` is the text of piece id i; `to_str()` / `WordTokenizer.from_str(text)` save and load it (for "bpe"
    the text is the Hugging Face JSON, which `tokenizers.Tokenizer.from_str` reads as is)."""

    def __init__(self, kind: str, letters: str, hf=None):
        if kind not in TOKENIZERS or (kind == "bpe") != (hf is not None):
            raise ValueError(f"a WordTokenizer is 'char' without a Hugging Face tokenizer or 'bpe' with one "
                             f"(got {kind!r})")
        self.kind, self.letters, self.hf = kind, letters, hf
        if hf is None:
            self.pieces = list(letters)
        else:
            by_id = {i: piece for piece, i in hf.get_vocab().items()}
            self.pieces = [by_id[i] for i in range(len(by_id))]

    def encode(self, words: list[str]) -> list[list[int]]:
        """Return each word's piece ids; a word with a letter outside the alphabet is refused."""
        for word in words:
            if not word or set(word) - set(self.letters):
                raise ValueError(f"word {word!r} is empty or has letters outside the alphabet {self.letters!r}")
        if self.hf is None:
            index = {letter: i for i, letter in enumerate(self.letters)}
            return [[index[letter] for letter in word] for word in words]
        return [encoding.ids for encoding in self.hf.encode_batch(words, add_special_tokens=False)]

    def to_str(self) -> str:
        """Return the tokenizer as JSON text (Hugging Face's own for "bpe")."""
        if self.hf is None:
            return json.dumps({"char_letters": self.letters})
        return self.hf.to_str()

    @classmethod
    def from_str(cls, text: str) -> WordTokenizer:
        """Return the tokenizer saved by `to_str`."""
        saved = json.loads(text)
        if "char_letters" in saved:
            return cls("char", saved["char_letters"])
        hf = _tokenizers().Tokenizer.from_str(text)
        letters = "".join(sorted(piece for piece in hf.get_vocab() if len(piece) == 1))
        return cls("bpe", letters, hf)


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("the 'bpe' letters tokenizer needs Hugging Face tokenizers: pip install 'ontogeny[hf]'"
                          ) from None
    return tokenizers


def train_bpe(words: list[str], letters: str, vocab_size: int, counts=None) -> WordTokenizer:
    """Return a BPE word tokenizer with at most `vocab_size` pieces (every letter of `letters` among them) trained
    on `words`, each word one sequence (no pre-tokenizer), word i `counts[i]` times (default once)."""
    tokenizers = _tokenizers()
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list(letters),
                                             special_tokens=[], show_progress=False)
    corpus = words if counts is None else ([word] * int(n) for word, n in zip(words, counts))  # batches of a word
    hf.train_from_iterator(corpus, trainer)
    return WordTokenizer("bpe", letters, hf)


# ---- the lexicon ----------------------------------------------------------------------------------------------


class Vocabulary:
    """The model's token ids (see the module docstring): `letter(i)`, `digit(count)`, `piece(id)` and `words()`."""

    def __init__(self, letters: str, tokenizer: WordTokenizer):
        self.letters, self.tokenizer = letters, tokenizer
        self.first_letter = len(SPECIALS) + len(PROMPT_WORDS)
        self.first_digit = self.first_letter + len(letters)
        self.first_piece = self.first_digit + 10
        self.size = self.first_piece + len(tokenizer.pieces)

    def letter(self, index):
        return self.first_letter + np.asarray(index, dtype=np.int64)

    def digit(self, count):
        return self.first_digit + np.asarray(count, dtype=np.int64)

    def piece(self, piece_id):
        return self.first_piece + np.asarray(piece_id, dtype=np.int64)

    def words(self) -> list[str]:
        """Return the text of every token id; an asked letter is quoted ('a') to tell it from the piece a."""
        return [*SPECIALS, *PROMPT_WORDS, *(f"'{letter}'" for letter in self.letters), *map(str, range(10)),
                *self.tokenizer.pieces]


@dataclass
class WordTables:
    """Per word w and letter a (W words, A letters, P = the most pieces of any word)."""

    pieces: np.ndarray  # [W, P] int64 piece ids, -1 past n_pieces
    n_pieces: np.ndarray  # [W] int64
    count: np.ndarray  # [W, A] int64: occurrences of letter a in word w
    n_tokens_with_letter: np.ndarray  # [W, A] int64: pieces of word w that hold letter a
    inside_multichar: np.ndarray  # [W, A] bool: letter a occurs inside a piece of >= 2 letters of word w


def word_tables(words: list[str], tokenizer: WordTokenizer) -> WordTables:
    """Return the pieces and per-letter counts of `words` under `tokenizer` (see WordTables for shapes)."""
    encoded = tokenizer.encode(words)
    letters = tokenizer.letters
    for word, ids in zip(words, encoded):
        if "".join(tokenizer.pieces[i] for i in ids) != word:  # BPE without <unk> would drop unknown letters silently
            raise ValueError(f"the pieces of {word!r} do not spell it")
    n_pieces = np.array([len(ids) for ids in encoded], dtype=np.int64)
    pieces = np.full((len(words), n_pieces.max(initial=1)), -1, dtype=np.int64)  # [W, P]
    for w, ids in enumerate(encoded):
        pieces[w, : len(ids)] = ids
    holds, multichar = _holds(pieces, tokenizer)
    letter_index = {letter: i for i, letter in enumerate(letters)}
    count = np.zeros((len(words), len(letters)), dtype=np.int64)  # [W, A]
    for w, word in enumerate(words):
        np.add.at(count[w], [letter_index[letter] for letter in word], 1)
    return WordTables(pieces=pieces, n_pieces=n_pieces, count=count,
                      n_tokens_with_letter=holds.sum(axis=1).astype(np.int64),
                      inside_multichar=(holds & multichar[:, :, None]).any(axis=1))


def _holds(pieces: np.ndarray, tokenizer: WordTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Return holds [W, P, A] (piece p of word w holds letter a) and multichar [W, P] (it has >= 2 letters) for
    piece ids [W, P] padded with -1."""
    letter_index = {letter: i for i, letter in enumerate(tokenizer.letters)}
    piece_has = np.zeros((len(tokenizer.pieces) + 1, len(letter_index)), dtype=bool)  # [V+1, A]; last row: no piece
    piece_length = np.zeros(len(tokenizer.pieces) + 1, dtype=np.int64)  # [V+1]
    for i, piece in enumerate(tokenizer.pieces):
        piece_has[i, [letter_index[letter] for letter in piece]] = True
        piece_length[i] = len(piece)
    return piece_has[pieces], piece_length[pieces] > 1  # the pad -1 reads the empty last row


def piece_shares(tables: WordTables, probs: np.ndarray, n_pieces: int) -> np.ndarray:
    """Return [n_pieces] each piece's share of training prompts: the probability that a word drawn from `probs`
    (over the first len(probs) words, the training words) holds the piece at least once."""
    train = tables.pieces[: len(probs)]  # [Wt, P]
    has = np.zeros((len(train), n_pieces + 1), dtype=bool)  # [Wt, V+1]; the last column: the pad
    has[np.arange(len(train))[:, None], train] = True
    return probs @ has[:, :n_pieces]


def inside_shares(tables: WordTables, tokenizer: WordTokenizer, share: np.ndarray) -> np.ndarray:
    """Return [W, A] the training share of the rarest multi-letter piece of word w that holds letter a (NaN where
    none does: the letter is absent or only a piece of its own)."""
    holds, multichar = _holds(tables.pieces, tokenizer)
    piece_share = np.append(share, np.inf)[tables.pieces]  # [W, P]; the pad -1 reads inf
    inside = np.where(holds & multichar[:, :, None], piece_share[:, :, None], np.inf).min(axis=1)  # [W, A]
    return np.where(np.isfinite(inside), inside, np.nan)


@dataclass
class Lexicon:
    """The words (training words first), their word tokenizer, the model's vocabulary and per-word tables."""

    knobs: Letters
    words: list[str]  # [W]
    tokenizer: WordTokenizer
    vocabulary: Vocabulary
    tables: WordTables
    max_length: int = field(init=False)  # L: tokens of the longest prompt
    word_probs: np.ndarray = field(init=False)  # [n_train_words] the training distribution over training words
    piece_share: np.ndarray = field(init=False)  # [V] P(a training prompt's word holds the piece)
    inside_share: np.ndarray = field(init=False)  # [W, A] share of the rarest multi-letter piece holding the letter

    def __post_init__(self):
        self.max_length = 8 + int(self.tables.n_pieces.max())  # <bos> how many 'x' in ... ? n <eos>
        self.word_probs = self.knobs.word_probs()
        self.piece_share = piece_shares(self.tables, self.word_probs, len(self.tokenizer.pieces))
        self.inside_share = inside_shares(self.tables, self.tokenizer, self.piece_share)

    def split_words(self, split: str) -> np.ndarray:
        """Return the word indices of `split` ("train" | "test")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} (got {split!r})")
        n_train = self.knobs.n_train_words
        return np.arange(n_train) if split == "train" else np.arange(n_train, len(self.words))


def _pseudo_words(knobs: Letters, rng: np.random.Generator) -> list[str]:
    """Return knobs.n_words distinct consonant-vowel words, lengths spread evenly over 1..max_syllables."""
    vowels = [letter for letter in knobs.letters if letter in VOWELS]
    consonants = [letter for letter in knobs.letters if letter not in VOWELS]
    syllables = np.array([c + v for c in consonants for v in vowels], dtype=object)  # [K]
    words, remaining = [], knobs.n_words
    for s in range(1, knobs.max_syllables + 1):
        share = -(-remaining // (knobs.max_syllables - s + 1))  # ceil: an even split of what is left
        take = min(share, knobs.n_syllables**s)
        codes = rng.choice(knobs.n_syllables**s, size=take, replace=False)  # [take] distinct words of s syllables
        digits = (codes[:, None] // len(syllables) ** np.arange(s)) % len(syllables)  # [take, s] base-K digits
        words += ["".join(row) for row in syllables[digits]]
        remaining -= take
    assert remaining == 0, "check() bounds n_words by the capacity, and longer lengths hold more words"
    return [words[i] for i in rng.permutation(len(words))]


def _checked(knobs: Letters) -> None:
    problems = knobs.check()
    if problems:
        raise ValueError("; ".join(f"{name}: {message}" for name, message in problems))


def build(knobs: Letters, seed: int, tokenizer: WordTokenizer | None = None) -> Lexicon:
    """Return the lexicon of (knobs, seed) with its word tokenizer: trained on the training words, or `tokenizer`
    as given (a stored one, loaded with WordTokenizer.from_str)."""
    _checked(knobs)
    words = _pseudo_words(knobs, np.random.default_rng(stream_seed("letters-lexicon", seed)))
    if tokenizer is None:
        counts = None
        if knobs.word_zipf > 0:  # a corpus of ~1e6 words in the training proportions, every training word at least once
            counts = np.maximum(1, np.round(knobs.word_probs() * BPE_CORPUS))
        tokenizer = (WordTokenizer("char", knobs.letters) if knobs.tokenizer == "char" else
                     train_bpe(words[: knobs.n_train_words], knobs.letters, knobs.vocab_size, counts))
    elif tokenizer.letters != knobs.letters:
        raise ValueError(f"the tokenizer's alphabet {tokenizer.letters!r} is not the knobs' {knobs.letters!r}")
    return Lexicon(knobs=knobs, words=words, tokenizer=tokenizer, vocabulary=Vocabulary(knobs.letters, tokenizer),
                   tables=word_tables(words, tokenizer))


# ---- prompts --------------------------------------------------------------------------------------------------


@dataclass
class Prompts:
    """N prompts right-padded with <pad> to L = lexicon.max_length; the count token sits at `answer` (so the
    logits that predict it are those at answer - 1, the "?")."""

    tokens: np.ndarray  # [N, L] int64
    lengths: np.ndarray  # [N] int64
    answer: np.ndarray  # [N] int64: position of the count token
    count: np.ndarray  # [N] int64 in 0..9
    letter: np.ndarray  # [N] int64: index of the asked letter in the alphabet
    word: np.ndarray  # [N] int64: index of the word in lexicon.words
    n_pieces: np.ndarray  # [N] int64: tokens of the word
    inside_multichar: np.ndarray  # [N] bool: the letter occurs inside a multi-letter token of the word
    n_tokens_with_letter: np.ndarray  # [N] int64: tokens of the word that hold the letter
    piece_share: np.ndarray  # [N] float: training share of the rarest multi-letter piece holding the letter, or NaN

    def __len__(self) -> int:
        return len(self.lengths)


def sample(lexicon: Lexicon, split: str, n: int, seed: int, *, weighted: bool = False) -> Prompts:
    """Return n prompts about words of `split` (with replacement: uniform, or for "train" with `weighted` by the
    training distribution `lexicon.word_probs`) and letters drawn as in the module docstring; the same
    (lexicon, split, n, seed, weighted) always gives the same arrays."""
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    candidates = lexicon.split_words(split)
    rng = np.random.default_rng(stream_seed("letters-prompts", seed, SPLITS.index(split)))
    tables, vocab = lexicon.tables, lexicon.vocabulary
    if weighted and split == "train" and lexicon.knobs.word_zipf > 0:
        word = rng.choice(len(candidates), size=n, p=lexicon.word_probs)  # [N]
    else:  # uniform (also with word_zipf 0, drawn exactly as before the knob existed)
        word = candidates[rng.integers(len(candidates), size=n)]  # [N]
    present = tables.count[word] > 0  # [N, A]
    want_present = rng.random(n) < lexicon.knobs.present_share  # [N]
    pool = present == want_present[:, None]  # [N, A]
    pool[~pool.any(axis=1)] = True  # every letter present (or none absent): any letter will do
    letter = np.argmax(np.where(pool, rng.random(pool.shape), -1.0), axis=1)  # [N] uniform over the pool
    count = tables.count[word, letter]  # [N]
    n_pieces = tables.n_pieces[word]  # [N]

    length = 8 + n_pieces  # [N]
    tokens = np.full((n, lexicon.max_length), PAD, dtype=np.int64)  # [N, L]
    tokens[:, :5] = np.stack([np.full(n, BOS), np.full(n, HOW), np.full(n, MANY), vocab.letter(letter),
                              np.full(n, IN)], axis=1)
    columns = np.arange(tables.pieces.shape[1])  # [P]
    in_word = columns < n_pieces[:, None]  # [N, P]
    rows = np.nonzero(in_word)[0]
    tokens[rows, 5 + np.nonzero(in_word)[1]] = vocab.piece(tables.pieces[word][in_word])
    rows = np.arange(n)
    answer = 6 + n_pieces  # [N]
    tokens[rows, answer - 1] = QUESTION
    tokens[rows, answer] = vocab.digit(count)
    tokens[rows, answer + 1] = EOS
    return Prompts(tokens=tokens, lengths=length, answer=answer, count=count, letter=letter.astype(np.int64),
                   word=word, n_pieces=n_pieces, inside_multichar=tables.inside_multichar[word, letter],
                   n_tokens_with_letter=tables.n_tokens_with_letter[word, letter],
                   piece_share=lexicon.inside_share[word, letter])


def render(lexicon: Lexicon, tokens: np.ndarray) -> str:
    """Return one prompt [L] as text, the word's pieces joined by "|" ("<bos> how many 'a' in ba|na|na ? 3 <eos>")."""
    words = lexicon.vocabulary.words()
    first_piece = lexicon.vocabulary.first_piece
    out, previous_piece = [], False
    for token in tokens:
        if token == PAD:
            break
        is_piece = token >= first_piece
        if is_piece and previous_piece:
            out[-1] += "|" + words[token]
        else:
            out.append(words[token])
        previous_piece = is_piece
    return " ".join(out)
