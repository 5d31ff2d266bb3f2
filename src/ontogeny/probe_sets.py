"""Probe sets of the recorder: the examples a user's loop is scored on at every scheduled step (tensors, datasets or
token sequences), checked when they are made, and the two default losses that score them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .exceptions import StoreError
from .evaluation.evaluate import tensor_batches

LossFunction = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor | None]]

class ProbeSet:
    """Examples to evaluate at every scheduled step, with stable ids and optional named subsets.

    `data` is a pair of tensors (x [N, ...], y [N]), a `torch.utils.data.Dataset` or a Hugging Face
    `datasets.Dataset`. `ids` [N] are the examples' stable ids: tensor rows default to their positions; a dataset
    needs them (or, for a Hugging Face dataset, an "id" column), since its order is not guaranteed. `subsets` maps
    a name to the ids in it. Batches go to `loss(model, batch)`: (x, y) for tensors, the collated items otherwise.
    """

    def __init__(self, data: Any, *, ids: Sequence[int] | None = None, subsets: dict[str, Sequence[int]] | None = None,
                 batch_size: int = 256, loss: LossFunction | None = None, name: str = "probe", _kind_: str = ""):
        self.data, self.batch_size, self.loss, self.name = data, batch_size, loss, name
        self.kind = _kind_ or _kind(data, name)
        self.token_table: pd.DataFrame | None = None
        n = len(data[0]) if self.kind == "tensors" else len(data)
        if ids is None and self.kind == "hf" and "id" in data.column_names:
            ids = data["id"]
        if ids is None and self.kind != "tensors":
            raise StoreError(f"probe set {name!r}: a dataset needs stable example ids (ids=...; e.g. "
                             f"ids=range(len(dataset)) if its order never changes)")
        if n == 0:
            raise StoreError(f"probe set {name!r}: has no examples")
        if self.kind == "tensors":
            _check_tensors(data, name, default_loss=loss is None)
        self.ids = np.arange(n, dtype=np.int64) if ids is None else _integer_ids(ids, name)
        if self.ids.shape != (n,) or len(np.unique(self.ids)) != n:
            raise StoreError(f"probe set {name!r}: needs {n} distinct ids, one per example (got {len(self.ids)} "
                             f"with {len(np.unique(self.ids))} distinct)")
        position = pd.Series(np.arange(n), index=self.ids)
        self.subsets = {}
        for subset, members in (subsets or {}).items():
            unknown = set(members) - set(self.ids.tolist())
            if unknown:
                raise StoreError(f"probe set {name!r}: subset {subset!r} names ids not in the set: "
                                 f"{sorted(unknown)[:5]}")
            mask = torch.zeros(n, dtype=torch.bool)
            mask[torch.tensor(position.loc[list(members)].to_numpy())] = True
            self.subsets[subset] = mask

    @classmethod
    def tokens(cls, tokens: Any, *, tokenizer: Any = None, subsets: dict[str, Sequence[int]] | None = None,
               batch_size: int = 16, loss: LossFunction | None = None, name: str = "probe") -> ProbeSet:
        """A per-token probe of a causal language model: token ids [S, L], each predicted token one example.

        Example (s, p) for p = 1..L-1 is the prediction of token p of sequence s from those before it; its id is
        s * L + p. `tokenizer` (optional) gives each token's text for the `tokens` table.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.int64)
        if tokens.ndim != 2 or tokens.shape[1] < 2:
            raise StoreError(f"probe set {name!r}: token ids must be [sequences, positions] with >= 2 positions "
                             f"(got shape {tuple(tokens.shape)})")
        n_seq, length = tokens.shape
        sequence, position = np.divmod(np.arange(n_seq * length), length)
        keep = position >= 1
        probe = cls(tokens[:, 1:].reshape(-1), ids=(sequence * length + position)[keep], subsets=subsets,
                    batch_size=batch_size, loss=loss, name=name, _kind_="tokens")
        probe.data = tokens
        token = tokens[:, 1:].reshape(-1).numpy()
        text = tokenizer.convert_ids_to_tokens(token.tolist()) if tokenizer is not None else [""] * len(token)
        probe.token_table = pd.DataFrame({"split": name, "example": probe.ids, "sequence": sequence[keep],
                                          "position": position[keep], "token": token, "text": text})
        return probe

    def batches(self, device: torch.device) -> Callable[[], Iterator[tuple[Any, int]]]:
        """The evaluator's batch source: batches on `device`, in id order."""
        if self.kind == "tensors":
            return tensor_batches(*(torch.as_tensor(t).to(device) for t in self.data), chunk=self.batch_size)
        if self.kind == "tokens":
            tokens, length = self.data.to(device), self.data.shape[1]

            def token_batches() -> Iterator[tuple[torch.Tensor, int]]:
                for start in range(0, len(tokens), self.batch_size):
                    part = tokens[start:start + self.batch_size]
                    yield part, len(part) * (length - 1)

            return token_batches

        def batches() -> Iterator[tuple[Any, int]]:
            if self.kind == "hf":
                data = self.data.with_format("torch")
                for start in range(0, len(data), self.batch_size):
                    batch = data[start:start + self.batch_size]
                    yield _to(batch, device), len(next(iter(batch.values())))
            else:
                loader = torch.utils.data.DataLoader(self.data, batch_size=self.batch_size, shuffle=False)
                for batch in loader:
                    yield _to(batch, device), _length(batch)

        return batches


def subset_rows(splits: Sequence[tuple[str, Any, dict[str, Any]]]) -> pd.DataFrame:
    """The `subsets` table of named splits: rows (split, example, subset) from (split name, example ids [N],
    {subset: mask [N]}) per split; what every producer puts (probe sets of a recorder or an ingest, a task's
    evaluation splits)."""
    rows = [(name, int(i), subset) for name, ids, subsets in splits
            for subset, mask in subsets.items() for i in np.asarray(ids)[np.asarray(mask, dtype=bool)]]
    return pd.DataFrame(rows, columns=["split", "example", "subset"])


def cross_entropy(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The default loss: cross entropy of `model(x)` logits [B, C] against y [B]; correct = top-1 is y."""
    if isinstance(batch, dict) or not isinstance(batch, tuple | list) or len(batch) != 2:
        raise StoreError("the default loss reads (x, y) batches; pass loss=fn(model, batch) -> (loss [B], "
                         "correct [B]) for batches of another shape")
    x, y = batch
    logits = _logits(model(x))
    return nn.functional.cross_entropy(logits, y, reduction="none"), logits.argmax(-1) == y


def causal_lm(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss of a causal LM on token ids [B, L]: predicting token p from tokens < p, for p = 1..L-1,
    flattened to [B * (L-1)]; correct = the top-1 prediction is the token. Works for Hugging Face models too."""
    logits = _logits(model(tokens))[:, :-1].float()  # [B, L-1, V]
    target = tokens[:, 1:]  # [B, L-1]
    # loss = logsumexp - the target's logit, and top-1 = the target's logit is the largest: one max and one
    # logsumexp over the vocabulary, where cross_entropy + argmax would also write out the log-softmax.
    target_logit = logits.gather(-1, target[..., None])[..., 0]
    loss = torch.logsumexp(logits, -1) - target_logit
    correct = target_logit >= logits.amax(-1)
    return loss.reshape(-1), correct.reshape(-1)


def _logits(output: Any) -> torch.Tensor:
    return getattr(output, "logits", output)  # Hugging Face models return an output object


def _check_tensors(data: tuple, name: str, *, default_loss: bool) -> None:
    """StoreError (one line) for (x, y) the recorder cannot score: x not numbers, NaN or inf in x (it would be
    scored as data), and for the default cross entropy y other than one class index >= 0 per row."""
    try:
        x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    except (TypeError, ValueError, RuntimeError) as err:
        raise StoreError(f"probe set {name!r}: x and y must be numeric tensors or arrays "
                         f"({str(err).splitlines()[0]})") from None
    _check_finite(x, name)
    if not default_loss:
        return
    if y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or y.is_complex():
        raise StoreError(f"probe set {name!r}: the default loss (cross entropy) needs y as one integer class per "
                         f"example, shape [{len(x)}] (got {y.dtype} of shape {tuple(y.shape)}); pass loss=fn(model, "
                         "batch) for other targets")
    if (y < 0).any():
        raise StoreError(f"probe set {name!r}: y holds a negative class ({int(y.min())}) at row "
                         f"{int((y < 0).nonzero()[0, 0])}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    """StoreError naming the first row of float inputs x [N, ...] that holds NaN or inf (it would be scored as data)."""
    if torch.is_floating_point(x) and not x.isfinite().all():
        row = int((~x.isfinite()).reshape(len(x), -1).any(1).nonzero()[0, 0])
        raise StoreError(f"probe set {name!r}: x holds NaN or infinite values (at row {row})")


def _integer_ids(ids: Sequence[int], name: str) -> np.ndarray:
    """The ids as int64; StoreError for anything but integers (a float id would be truncated, a string refused)."""
    values = np.asarray(list(ids))
    if values.dtype.kind not in "iu":
        raise StoreError(f"probe set {name!r}: ids must be integers (got {values.dtype} values such as "
                         f"{values.reshape(-1)[0]!r})" if values.size else f"probe set {name!r}: ids must be integers")
    return values.astype(np.int64)


def _kind(data: Any, name: str) -> str:
    if isinstance(data, tuple | list) and len(data) == 2 and all(hasattr(t, "__len__") for t in data):
        if len(data[0]) != len(data[1]):
            raise StoreError(f"probe set {name!r}: x has {len(data[0])} rows, y has {len(data[1])}")
        return "tensors"
    if type(data).__module__.startswith("datasets") and hasattr(data, "column_names"):
        return "hf"
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        return "torch"
    raise StoreError(f"probe set {name!r}: expected (x, y) tensors, a torch Dataset or a Hugging Face Dataset "
                     f"(got {type(data).__name__})")


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _length(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, dict):
        return _length(next(iter(batch.values())))
    return _length(batch[0])
