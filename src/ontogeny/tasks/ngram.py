"""Maximum-likelihood n-gram next-token predictors: the reference strategies (unigram, bigram, trigram) that the
language tasks measure a model's distance to."""

from __future__ import annotations

import numpy as np

__all__ = ["BOS", "NgramModel"]

BOS = 2  # the context before a sentence's first word: the grammar's <bos> token id (grammar_gen.BOS, checked there)


class NgramModel:
    """Maximum-likelihood n-gram next-token predictor with back-off: a context never seen in training falls back
    to the longest seen suffix of it (order 1 = unigram). No smoothing: a seen context gives 0 to unseen tokens.

    Written by hand: a counting table over integer-coded contexts is all it needs.
    """

    def __init__(self, order: int, vocab_size: int):
        if order < 1:
            raise ValueError(f"order must be >= 1 (got {order})")
        if vocab_size <= BOS or float(vocab_size) ** (order - 1) >= 2.0**62:
            raise ValueError(f"vocab_size {vocab_size} must exceed {BOS} and vocab_size**(order-1) fit in int64")
        self.order, self.vocab_size = order, vocab_size
        self.contexts_: list[np.ndarray] = []  # per context length k = 0..order-1: sorted context codes [n_k]
        self.probs_: list[np.ndarray] = []  # per context length: P(next | context) [n_k, V]

    def _context_codes(self, tokens: np.ndarray, k: int) -> np.ndarray:
        """Return the code of the k tokens before each position ([S, L]; <bos> before the first token)."""
        n, length = tokens.shape
        padded = np.concatenate([np.full((n, self.order - 1), BOS, dtype=np.int64), tokens], axis=1)
        codes = np.zeros((n, length), dtype=np.int64)
        for j in range(k):  # j-th token back is padded[:, t + order - 1 - (j + 1)]
            start = self.order - 2 - j
            codes = codes * self.vocab_size + padded[:, start : start + length]
        return codes

    def _validated(self, tokens: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, lengths = np.asarray(tokens, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        if tokens.ndim != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"need tokens [S, L] and lengths [S] (got {tokens.shape} and {lengths.shape})")
        if lengths.min(initial=0) < 0 or lengths.max(initial=0) > tokens.shape[1]:
            raise ValueError(f"lengths must lie in 0..{tokens.shape[1]}")
        valid = np.arange(tokens.shape[1]) < lengths[:, None]  # [S, L]
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"tokens must lie in 0..{self.vocab_size - 1}")
        return tokens, lengths, valid

    def fit(self, tokens: np.ndarray, lengths: np.ndarray) -> NgramModel:
        """Count every (context, next token) pair of the sentences [S, L] (each of its first lengths[s] tokens)."""
        tokens, lengths, valid = self._validated(tokens, lengths)
        if not valid.any():
            raise ValueError("fit needs at least one token")
        targets = tokens[valid]  # [N]
        self.contexts_, self.probs_ = [], []
        for k in range(self.order):
            codes, inverse = np.unique(self._context_codes(tokens, k)[valid], return_inverse=True)
            counts = np.bincount(inverse * self.vocab_size + targets, minlength=len(codes) * self.vocab_size)
            counts = counts.reshape(len(codes), self.vocab_size).astype(np.float64)
            self.contexts_.append(codes)
            self.probs_.append(counts / counts.sum(axis=1, keepdims=True))
        return self

    def next_token_probs(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Return P(token at t | tokens before t) for every position: [S, L, V] float64, zero rows past the length."""
        if not self.probs_:
            raise ValueError("call fit before next_token_probs")
        tokens, lengths, valid = self._validated(tokens, lengths)
        out = np.zeros((*tokens.shape, self.vocab_size), dtype=np.float64)  # [S, L, V]
        for k in range(self.order):  # longer contexts overwrite shorter ones where they were seen
            query = self._context_codes(tokens, k)  # [S, L]
            index = np.minimum(np.searchsorted(self.contexts_[k], query), len(self.contexts_[k]) - 1)
            seen = valid & (self.contexts_[k][index] == query)
            out[seen] = self.probs_[k][index[seen]]
        return out

