"""What the language tasks share: the probes recorded at every checkpoint beside the per-token losses.

- Strategy distances: KL(reference || model) of the next-token (or masked-token) distribution, averaged over a fixed
  probe set's scored tokens, for each reference predictor the task fits (uniform, n-gram, in-context statistics).
  KL from the reference, so a reference's zero probabilities are allowed (0 log 0 = 0) and the model's never occur.
- Syntactic attention (tasks with gold dependency trees): for every head, the share of tokens whose strongest
  attention goes to their gold head or to one of their dependents (Chen et al. 2024's implicit-parse UAS).
"""

from __future__ import annotations

import torch

from .base import IGNORE, Task


def kl_from_references(log_probs: torch.Tensor, references: dict[str, torch.Tensor],
                       rows: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Mean KL(reference || model) per member, {f"kl/{name}": [M]}: log_probs [M, N, C] the model's, references
    {name: [N, C]} probabilities at the same N tokens; `rows` {name: bool [N]} averages a reference over those
    tokens only (e.g. the last of each sequence)."""
    result = {}
    for name, ref in references.items():
        ref, own = ref.to(log_probs.device), log_probs
        if rows and name in rows:
            keep = rows[name].to(log_probs.device)
            ref, own = ref[keep], log_probs[:, keep]
        entropy_term = torch.xlogy(ref, ref).sum(-1)  # [N]: sum p log p, 0 where p = 0
        cross = (ref[None] * own).sum(-1)  # [M, N]
        result[f"kl/{name}"] = (entropy_term[None] - cross).mean(1)
    return result


def attention_uas(pattern: torch.Tensor, related: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Implicit-parse UAS of every head: pattern [M, S, H, T, T] (query, key), related [S, T, T] bool (key is the
    query's gold head or dependent), queries [S, T] bool (tokens scored) -> [M, H], the share of scored queries whose
    most-attended key is related (ties go to the first key)."""
    strongest = pattern.argmax(-1)  # [M, S, H, T]
    n_seq, positions = strongest.shape[1], strongest.shape[3]
    seq = torch.arange(n_seq, device=pattern.device)[None, :, None, None]
    query = torch.arange(positions, device=pattern.device)[None, None, None, :]
    hit = related.to(pattern.device)[seq, query, strongest]  # [M, S, H, T]
    hit = hit & queries.to(pattern.device)[None, :, None, :]
    return hit.sum((1, 3)).float() / queries.sum()  # [M, H]


OFFSETS = (-3, -2, -1, 0, 1, 2)  # Chen et al.'s positional baselines (0, the word itself, is never right)
NOT_A_WORD = -2  # in `directed_hits`' heads: a position that holds no word (<bos>, padding); -1 is the root


def directed_hits(pattern: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """Chen et al. 2024's directed implicit parse (their released attention_depparse_probe.py): each word's predicted
    head is the word it attends to most ("dep->head") or the word that attends to it most ("head<-dep"), attention
    to itself zeroed and non-words (<bos>, pads: their [CLS], [SEP]) never chosen, ties to the first word. pattern
    [M, S, H, T, T] (query, key), heads [S, T] (the gold head's position, -1 for the root, NOT_A_WORD) -> hits
    [M, H, 2, S, T] bool (direction 0 dep->head, 1 head<-dep); the root is never hit (no word is its head)."""
    words = (heads >= -1).to(pattern.device)  # [S, T]
    eye = torch.eye(pattern.shape[-1], dtype=torch.bool, device=pattern.device)
    hits = []
    for attention in (pattern, pattern.transpose(-1, -2)):
        attention = attention.masked_fill(eye, 0.0).masked_fill(~words[None, :, None, None, :], -1.0)
        predicted = attention.argmax(-1)  # [M, S, H, T]
        hits.append((predicted == heads.to(pattern.device)[None, :, None]) & words[None, :, None])
    return torch.stack(hits).permute(1, 3, 0, 2, 4)  # [M, H, 2, S, T]


def offset_hits(heads: torch.Tensor, offset: int) -> torch.Tensor:
    """Chen et al.'s positional baseline: every word's head is the word `offset` places away, clamped to the
    sentence (before the first word: the root). heads [S, T] as in `directed_hits` (words contiguous) -> [S, T]."""
    words = heads >= -1
    first = words.int().argmax(1, keepdim=True)  # [S, 1] the first word's position
    last = first + words.sum(1, keepdim=True) - 1  # [S, 1]
    guess = torch.arange(heads.shape[1])[None] + offset  # [1, T]
    guess = torch.where(guess < first, -1, torch.minimum(guess, last))  # -1: the root
    return words & (guess == heads)


def dependency_relations(heads: torch.Tensor) -> torch.Tensor:
    """related [S, T, T] bool from gold heads [S, T] (-1: none): related[s, i, j] iff j is i's head or i is j's."""
    n_seq, positions = heads.shape
    related = torch.zeros(n_seq, positions, positions, dtype=torch.bool)
    s, i = torch.nonzero(heads >= 0, as_tuple=True)
    related[s, i, heads[s, i]] = True  # the head
    related[s, heads[s, i], i] = True  # the dependent
    return related


class LanguageTask(Task):
    """Base of the language tasks: subclasses set the probe sequences and references, and (with gold trees) the
    relations of `attention_uas`; `measures` computes both in one forward pass with attention patterns."""

    loss = "cross_entropy"
    probe_x: torch.Tensor  # [S, T] the probe sequences as the model reads them
    probe_y: torch.Tensor  # [S, T] their targets (IGNORE where not scored)
    references: dict[str, torch.Tensor]  # name -> [N, C] at the probe's scored tokens, row-major
    reference_rows: dict[str, torch.Tensor] = {}  # name -> bool [N]: a reference scored at these tokens only
    related: torch.Tensor | None = None  # [S, T, T] bool, for the UAS
    uas_queries: torch.Tensor | None = None  # [S, T] bool: the tokens the UAS is averaged over
    uas_x: torch.Tensor | None = None  # [S, T] the UAS's own input (a masked LM's sentences unmasked); None: probe_x
    parse_heads: torch.Tensor | None = None  # [S, T] gold head positions for `directed_hits` (same input)
    parse_groups: dict[str, torch.Tensor] = {}  # relation name -> [S, T] bool: the words scored per relation

    def measures(self, model) -> dict[str, torch.Tensor]:
        """{"kl/<reference>": [M]} and, with gold trees, {"uas/L<l>H<h>": [M], "uas/best": [M]}. The probe
        sequences are the test split's first ones: the logits the recorder kept from its evaluation are used (once)
        where there is no attention pattern to compute on the same input."""
        device = next(model.parameters()).device
        x, test = self.probe_x.to(device), self.eval_splits()[0]
        kept, test.kept_logits = test.kept_logits, None
        if self.related is not None and self.uas_x is None:  # one pass for both
            logits, patterns = model.forward_with_patterns(x)  # [M, S, T, C], per layer [M, S, H, T, T]
        else:
            logits = torch.cat(kept, 1) if kept else model(x)  # [M, S, T, C]
            patterns = [] if self.related is None else model.attention_patterns(self.uas_x.to(device))
        scored = self.probe_y != IGNORE  # [S, T]
        log_probs = logits.log_softmax(-1)[:, scored.to(logits.device)]  # [M, N, C]
        result = kl_from_references(log_probs, self.references, self.reference_rows)
        if patterns:
            n_heads = patterns[0].shape[2]
            uas = torch.cat([attention_uas(p, self.related, self.uas_queries) for p in patterns], dim=1)  # [M, L*H]
            for index in range(uas.shape[1]):
                result[f"uas_undirected/L{index // n_heads}H{index % n_heads}"] = uas[:, index]
            result["uas_undirected/best"] = uas.max(1).values
            result["uas_undirected/adjacent"] = torch.full_like(uas[:, 0], self.adjacent_uas())
            if self.parse_heads is not None:
                result |= self._directed_uas(patterns, n_heads)
        return result

    def _directed_uas(self, patterns: list[torch.Tensor], n_heads: int) -> dict[str, torch.Tensor]:
        """Chen et al.'s scores: `uas/L<l>H<h>` (the head's better direction), `uas/best` (best head and direction),
        `uas/offset` (the best positional baseline, offsets -3..2), and per relation `uas/best/<rel>` and
        `uas/offset/<rel>`, each with its own best head (their Table 1)."""
        hits = torch.cat([directed_hits(p, self.parse_heads) for p in patterns], dim=1).float()  # [M, LH, 2, S, T]
        groups = {"all": self.parse_heads >= -1} | self.parse_groups
        result = {}
        for name, words in groups.items():
            baseline = self._offset_baselines()[name]
            words = words.to(hits.device)
            score = (hits * words).sum((-1, -2)) / words.sum()  # [M, LH, 2]
            suffix = "" if name == "all" else f"/{name}"
            result[f"uas/best{suffix}"] = score.flatten(1).max(1).values
            result[f"uas/offset{suffix}"] = torch.full_like(result[f"uas/best{suffix}"], baseline)
            if name == "all":
                per_head = score.max(2).values  # [M, LH]
                for index in range(per_head.shape[1]):
                    result[f"uas/L{index // n_heads}H{index % n_heads}"] = per_head[:, index]
        return result

    def _offset_baselines(self) -> dict[str, float]:
        """{relation or "all": the best offset's share of its words}, worked out once (the gold trees are fixed)."""
        if getattr(self, "_offsets", None) is None:
            offsets = torch.stack([offset_hits(self.parse_heads, k) for k in OFFSETS]).float()  # [K, S, T]
            groups = {"all": self.parse_heads >= -1} | self.parse_groups
            self._offsets = {name: float(((offsets * words).sum((-1, -2)) / words.sum()).max())
                             for name, words in groups.items()}
        return self._offsets

    def adjacent_uas(self) -> float:
        """The UAS of a head that attends to the previous token (or, for a masked LM, the better of previous and
        next): the baseline a head reaches without any syntax, since neighbours are often head and dependent."""
        positions = self.related.shape[1]
        best = 0.0
        for offset in (-1,) if self.objective == "causal" else (-1, 1):
            key = (torch.arange(positions) + offset).clamp(0, positions - 1)  # [T]
            pattern = torch.nn.functional.one_hot(key, positions).float()  # [T, T]
            pattern = pattern.expand(1, len(self.related), 1, positions, positions)  # [M=1, S, H=1, T, T]
            best = max(best, float(attention_uas(pattern, self.related, self.uas_queries)))
        return best
