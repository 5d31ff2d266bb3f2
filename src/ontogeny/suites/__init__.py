"""Ingest a published checkpoint suite (Pythia, PolyPythias, or your own saved checkpoints) as a run.

For every member (a series of checkpoints: one seed) and every revision (a step), the model scores each token of
the probe; per-token losses and top-1 correctness become `examples` rows, their means per probe and per frequency
bucket `scalars`, and each token's identity the `tokens` table, so every analysis and report works on the suite.
Each member writes through its own writer and commits once per revision, so a killed ingest continues where it
stopped and a later ingest with more revisions adds only those.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..exceptions import IngestError
from ..evaluation.evaluate import Evaluator, Probe, scalar_rows
from ..probe_sets import ProbeSet, causal_lm, subset_rows
from ..store import Run, ShardWriter, join_run, member_row, members_frame, one_line_when_disk_full
from .sources import Source, config_hash, model_config, open_source, step_of, weights_hash

SPLIT = "probe"
BUCKETS = ("frequent", "medium", "rare")  # tokens by how often they occur in the probe, a third of occurrences each


def ingest(source: str, probe: str | Path, *, out: str | Path, revisions: Sequence[str] | None = None,
           members: Sequence[str] = (), build: str | None = None, context: int = 128, batch_size: int = 8,
           progress: Callable[[str, int, int, int, float], None] | None = None) -> Run:
    """Ingest `source` (and `members`, one member each) at `revisions` (default: all) scored on `probe`; return the run.

    `probe` is a text file (tokenized with the suite's own tokenizer, cut into sequences of `context` tokens) or
    token ids [sequences, positions] in a .npy, .pt or .parquet file. `progress(member, step, done, total,
    tokens_per_second)` is called after each revision (done and total: that member's revisions).
    """
    if batch_size < 1:
        raise IngestError(f"--batch-size {batch_size}: must be at least 1")
    sources = [open_source(name, build) for name in (source, *members)]
    names = [str(Path(s.path).resolve()) if hasattr(s, "path") else s.name for s in sources]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise IngestError(f"{twice}: given twice as a member (each member is one checkpoint series)")
    tokens, tokenizer = _probe_tokens(Path(probe), sources, context)
    wanted = {src.name: list(revisions) if revisions else src.revisions() for src in sources}
    for src in sources:  # refused before anything is written: unknown revisions, a first checkpoint that won't load
        _check_revisions(wanted[src.name])
        src.check(wanted[src.name])
    _check_probe(sources[0].load(wanted[sources[0].name][0]), tokens, probe)
    buckets = _frequency_buckets(tokens)
    probe_set = ProbeSet.tokens(tokens, tokenizer=tokenizer, subsets=buckets, batch_size=batch_size, name=SPLIT)
    bucket_of = {int(i): name for name, ids in buckets.items() for i in ids}
    probe_set.token_table["frequency"] = probe_set.token_table.example.map(bucket_of)
    digest = hashlib.sha256(tokens.numpy().tobytes()).hexdigest()
    producer = {"kind": "suite", "sources": [s.name for s in sources], "probe": str(probe), "probe_sha256": digest,
                "probe_tokens": int(tokens.numel()), "context": int(tokens.shape[1])}
    layout = join_run(out, producer, reads=[s.path for s in sources if hasattr(s, "path")])
    recorded = layout.read_meta()["producer"]
    if recorded.get("probe_sha256") != digest:
        raise IngestError(f"{layout.root}: ingested with another probe ({recorded.get('probe')}); use another --out")
    with one_line_when_disk_full(layout.root, "run the same command again to go on"):  # one commit per revision
        for member, src in enumerate(sources):
            _ingest_member(layout.root, member, src, wanted[src.name], probe_set, progress)
    return Run(layout.root)


def _ingest_member(root: Path, member: int, source: Source, wanted: list[str], probe_set: ProbeSet,
                   progress) -> None:
    with ShardWriter(root, f"member-{member:05d}") as writer:
        known = Run(root).members().set_index("member")
        if member in known.index and known.source[member] != source.name:
            raise IngestError(f"{root}: member {member} is {known.source[member]}, not "
                              f"{source.name} (give --members in the order of the first ingest)")
        done = Run(root).revisions()
        done = done[done.member == member]
        todo = [r for r in wanted if r not in set(done.revision)]
        evaluator = Evaluator(writer, [member], [Probe(SPLIT, probe_set.ids, probe_set.batches(torch.device("cpu")),
                                                       None, probe_set.subsets, adapter=_single_causal_lm)])
        table = done.copy()
        # a rerun keeps what an earlier session measured; with nothing left to score it reloads one revision for it
        chance = known.chance_loss.get(member) if "chance_loss" in known else None
        if (chance is None or pd.isna(chance)) and not todo and len(done):
            chance = _chance_loss(source.load(done.revision.iloc[-1]))
        chance = None if chance is None or pd.isna(chance) else float(chance)
        writer.put("members", _member_row(member, source, "running", chance))
        writer.put("subsets", subset_rows([(SPLIT, probe_set.ids, probe_set.subsets)]))
        writer.put("tokens", probe_set.token_table)
        writer.commit()
        for revision in todo:
            started = time.perf_counter()
            try:
                model = source.load(revision)
            except IngestError as err:  # damage that only loading finds (a remote file, or inside the tensors)
                raise IngestError(f"{err}; the {len(table)} revisions of member {member} before it are kept: fix it or "
                                  "leave it out (--revisions) and run the same command again to go on") from None
            step = step_of(revision)
            if chance is None:
                chance = _chance_loss(model)
                writer.put("members", _member_row(member, source, "running", chance))
            with torch.inference_mode():
                scalars = evaluator.evaluate(step, model)
            scalar_rows(writer, [member], step, scalars)
            row = {"member": member, "step": step, "revision": revision, "weights_sha256": weights_hash(model),
                   "config_sha256": config_hash(model)}
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
            writer.put("revisions", table)
            writer.commit()  # one commit per revision: a killed ingest resumes at the next one
            if progress:
                total = len(done) + len(todo)  # this member's revisions: ingested before, and asked for now
                progress(source.name, step, len(table), total, len(probe_set.ids) / (time.perf_counter() - started))
        writer.put("members", _member_row(member, source, "ok", chance))
        writer.commit()


def _check_probe(model, tokens: torch.Tensor, probe) -> None:
    """IngestError unless the model (a suite's first checkpoint) can read the probe: sequences no longer than its
    positions, token ids inside its vocabulary, and one sequence scored and the weights hashed as the ingest will
    (so that a model it cannot handle fails here, before anything is written)."""
    config = model_config(model)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_ctx", None)
    if isinstance(positions, int) and tokens.shape[1] > positions:
        raise IngestError(f"--context {tokens.shape[1]}: the probe's sequences are longer than the model's "
                          f"{positions} positions (give --context {positions} or less)")
    vocab, low, high = _vocab_size(model), int(tokens.min()), int(tokens.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise IngestError(f"{probe}: token id {low if low < 0 else high} is outside the model's vocabulary "
                          f"(0..{'?' if vocab is None else vocab - 1})")
    try:
        with torch.inference_mode():
            _single_causal_lm(model, tokens[:1])
        weights_hash(model), config_hash(model)
    except Exception as err:  # noqa: BLE001 (whatever the model raises: one line, and no run left behind)
        message = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise IngestError(f"{probe}: the first checkpoint cannot score it ({type(err).__name__}: {message}); "
                          "nothing was ingested") from None


def _vocab_size(model) -> int | None:
    """How many tokens the model scores (its output embedding's rows, or TransformerLens's d_vocab_out), None when
    it does not say."""
    embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embeddings is not None:
        return embeddings.weight.shape[0]
    vocab = getattr(getattr(model, "cfg", None), "d_vocab_out", None)
    return vocab if isinstance(vocab, int) and vocab > 0 else None


def _chance_loss(model) -> float | None:
    """A uniform guess over the vocabulary, ln V nats per token (None when the model does not say its V)."""
    vocab = _vocab_size(model)
    return math.log(vocab) if vocab is not None else None


def _single_causal_lm(model, tokens):
    loss, correct = causal_lm(model, tokens)
    return loss.reshape(1, -1), correct.reshape(1, -1)


def _probe_tokens(path: Path, sources: list[Source], context: int) -> tuple[torch.Tensor, object]:
    """The probe as token ids [S, L] and the tokenizer that made them (None for token files)."""
    if not path.is_file():
        raise IngestError(f"{path}: no such probe file")
    if path.suffix in (".npy", ".pt", ".parquet"):
        return _token_file(path), sources[0].tokenizer()
    if context < 2:
        raise IngestError(f"--context {context}: sequences need at least 2 tokens")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise IngestError(f"{path}: not a UTF-8 text file (token ids go in .npy, .pt or .parquet)") from None
    tokenizers = [s.tokenizer() for s in sources]
    if tokenizers[0] is None:
        raise IngestError(f"{sources[0].name}: no tokenizer found to tokenize the probe text (give token ids)")
    ids = [tuple(t(text)["input_ids"]) if t is not None else None for t in tokenizers]
    if any(i is not None and i != ids[0] for i in ids[1:]):
        raise IngestError("the members tokenize the probe differently; ingest them into separate runs")
    n = len(ids[0]) // context * context  # whole sequences only
    if n == 0:
        raise IngestError(f"{path}: {len(ids[0])} tokens, fewer than one sequence of --context {context}")
    return torch.tensor(ids[0][:n], dtype=torch.int64).reshape(-1, context), tokenizers[0]


def _token_file(path: Path) -> torch.Tensor:
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".pt":
            data = torch.load(path, weights_only=True)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            column = table.column(0)
            data = np.stack(column.to_pylist()) if table.num_columns == 1 else table.to_pandas().to_numpy()
        data = np.asarray(data)
        if data.dtype == np.uint64:  # torch has no uint64: ids past int64 would wrap around
            if data.size and data.max() > np.iinfo(np.int64).max:
                raise ValueError(f"token id {data.max()} is too large")
            data = data.astype(np.int64)
        tokens = torch.as_tensor(data)
    except Exception as err:  # noqa: BLE001
        raise IngestError(f"{path}: cannot read token ids ({str(err).splitlines()[0] if str(err) else err!r})") from None
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2 or tokens.dtype.is_floating_point or \
            tokens.dtype == torch.bool:
        raise IngestError(f"{path}: token ids must be integers of shape [sequences, positions >= 2] "
                          f"(got {tuple(tokens.shape)} {tokens.dtype})")
    return tokens.to(torch.int64)


def _frequency_buckets(tokens: torch.Tensor) -> dict[str, np.ndarray]:
    """Example ids per frequency bucket: predicted tokens ranked by their count in the probe, cut into thirds of
    the occurrences (frequent tokens first)."""
    length = tokens.shape[1]
    predicted = tokens[:, 1:].reshape(-1).numpy()
    ids = (np.arange(tokens.shape[0])[:, None] * length + np.arange(1, length)[None, :]).reshape(-1)
    values, counts = np.unique(predicted, return_counts=True)
    count = dict(zip(values.tolist(), counts.tolist()))
    order = np.argsort([-count[t] for t in predicted.tolist()], kind="stable")
    buckets = np.empty(len(predicted), dtype=object)
    for bucket, part in zip(BUCKETS, np.array_split(order, 3)):
        buckets[part] = bucket
    return {bucket: ids[buckets == bucket] for bucket in BUCKETS}


def _member_row(member: int, source: Source, status: str, chance: float | None) -> pd.DataFrame:
    seed = re.search(r"seed[-_]?(\d+)", Path(source.name).name)
    return members_frame([member_row(member, status, init_seed=int(seed.group(1)) if seed else None,
                                     source=source.name, loss_kind="cross_entropy", chance_loss=chance)])


def _check_revisions(revisions: list[str]) -> None:
    nameless = [r for r in revisions if step_of(r) is None]
    if nameless:
        raise IngestError(f"revision {nameless[0]!r}: its name carries no step (expected step<N>)")
    steps = [step_of(r) for r in revisions]
    if len(set(steps)) != len(steps):
        raise IngestError(f"revisions {revisions}: two revisions name the same step")

