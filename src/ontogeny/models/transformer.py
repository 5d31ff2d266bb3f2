"""Ensemble-native transformer: M members in one module, every parameter shaped [M, ...].

With `layer_norm = false` and the defaults of `TransformerSpec` this is Nanda et al. 2023's grokking transformer
(learned positions, no attention or unembedding biases, ReLU MLP, no LayerNorm); with `layer_norm = true` it is a
pre-LN transformer. The task decides what it outputs: on classification tasks the loss reads the last position
only, so the last layer computes its queries, MLP and unembedding there alone; on language tasks it outputs at
every position, with causal attention (`objective = "causal"`) or bidirectional attention that never looks at
padding (`"masked"`, BERT-style).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..spec import MODELS, Check, ModelSpec, Sizes
from .layers import (activation, embed_tokens, fan_in_std, init_generators, member_constant, member_lookup,
                     member_normal)
from .plain import MemberTransformer
from .sites import HookedEnsemble, Site


@MODELS.register("transformer")
@dataclass(frozen=True)
class TransformerSpec(ModelSpec):
    """A decoder-only transformer that reads the output at the last position."""

    name: str = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    layer_norm: bool = False
    activation: str = "relu"
    init_scale: float = 1.0
    n_ctx: int = 0  # positions the model reads; 0: the task's sequence length

    def check(self, check: Check, sizes: Sizes) -> None:
        check(self.n_layers >= 1, "model.n_layers", "must be at least 1")
        check(self.d_model >= 1, "model.d_model", "must be at least 1")
        check(self.n_heads >= 1, "model.n_heads", "must be at least 1")
        check(self.d_model % self.n_heads == 0, "model.n_heads", "must divide model.d_model")
        check(self.d_mlp >= 1, "model.d_mlp", "must be at least 1")
        check(self.activation in ("relu", "gelu"), "model.activation", "must be relu or gelu")
        check(sizes.vocab_size is not None, "model.name",
              "the transformer reads tokens; this task gives bits or reals (use model.name = 'mlp')")
        check(self.n_ctx >= 0, "model.n_ctx", "must be >= 0 (0: the task's sequence length)")
        check(not self.n_ctx or sizes.n_positions <= self.n_ctx, "model.n_ctx",
              f"is shorter than the task's sequences ({sizes.n_positions} tokens)")

    def memory(self, sizes: Sizes) -> tuple[int, int]:
        d, positions = self.d_model, self.n_ctx or sizes.n_positions
        params = (sizes.vocab_size * d + positions * d + self.n_layers * (4 * d * d + 2 * d * self.d_mlp)
                  + d * sizes.n_outputs)
        return params, self.n_layers * positions * (6 * d + 2 * self.d_mlp + self.n_heads * positions)

    def build(self, task, init_seeds, init_scales=None) -> EnsembleTransformer:
        return EnsembleTransformer(self, vocab_size=task.vocab_size, n_positions=self.n_ctx or task.n_positions,
                                   n_outputs=task.n_outputs, init_seeds=init_seeds, init_scales=init_scales,
                                   objective=task.objective, pad_token=task.pad_token)


def _project(x: Tensor, weight: Tensor) -> Tensor:
    """Per-member linear map: x [M, ..., a], weight [M, a, b] -> [M, ..., b] (one bmm over all members)."""
    n_members, width_in = x.shape[0], x.shape[-1]
    out = torch.bmm(x.reshape(n_members, -1, width_in), weight)  # [M, N, b]
    return out.view(*x.shape[:-1], weight.shape[-1])  # [M, ..., b]


def _per_member(vector: Tensor, like: Tensor) -> Tensor:
    """View a per-member vector [M, k] so that it broadcasts against `like` [M, ..., k]."""
    return vector.view(vector.shape[0], *([1] * (like.dim() - 2)), vector.shape[-1])


def _layer_norm(x: Tensor, gain: Tensor | None, bias: Tensor | None) -> Tensor:
    """LayerNorm over the last axis with per-member gain and bias [M, d]; the identity when the model has none."""
    if gain is None:
        return x
    normed = nn.functional.layer_norm(x, x.shape[-1:])  # [M, ..., d]
    return normed * _per_member(gain, x) + _per_member(bias, x)  # [M, ..., d]


class _Block(nn.Module):
    """One attention + MLP layer of every member (pre-LN when the spec asks for LayerNorm)."""

    def __init__(self, spec: TransformerSpec, generators: list[torch.Generator], init_scales: Tensor, layer: int):
        super().__init__()
        n_members, d, d_mlp = len(generators), spec.d_model, spec.d_mlp
        self.n_heads, self.activation = spec.n_heads, spec.activation
        # Creation order is the draw order from each member's generator: keep it fixed.
        self.ln_attn_gain, self.ln_attn_bias = self._layer_norm_params(spec, n_members)
        self.W_Q = member_normal(generators, (d, d), fan_in_std(d, init_scales))  # [M, d, H*dh]
        self.W_K = member_normal(generators, (d, d), fan_in_std(d, init_scales))  # [M, d, H*dh]
        self.W_V = member_normal(generators, (d, d), fan_in_std(d, init_scales))  # [M, d, H*dh]
        self.W_O = member_normal(generators, (d, d), fan_in_std(d, init_scales))  # [M, H*dh, d]
        self.ln_mlp_gain, self.ln_mlp_bias = self._layer_norm_params(spec, n_members)
        self.W_in = member_normal(generators, (d, d_mlp), fan_in_std(d, init_scales))  # [M, d, d_mlp]
        self.b_in = member_constant(n_members, (d_mlp,))  # [M, d_mlp]
        self.W_out = member_normal(generators, (d_mlp, d), fan_in_std(d_mlp, init_scales))  # [M, d_mlp, d]
        self.b_out = member_constant(n_members, (d,))  # [M, d]
        # Sites (models/sites.py): the heads' outputs, the MLP's normalized input, hidden activations and output,
        # and the residual stream the layer leaves
        rows = ("member", "batch", "position", "feature")
        self.site_heads = Site(f"heads.{layer}", ("member", "batch", "head", "position", "feature"), layer)
        self.site_mlp_in = Site(f"mlp_in.{layer}", rows, layer)
        self.site_mlp = Site(f"mlp.{layer}", rows, layer)
        self.site_mlp_out = Site(f"mlp_out.{layer}", rows, layer)
        self.site_resid = Site(f"resid.{layer}", rows, layer)

    @staticmethod
    def _layer_norm_params(spec: TransformerSpec, n_members: int) -> tuple[nn.Parameter | None, nn.Parameter | None]:
        if not spec.layer_norm:
            return None, None
        return member_constant(n_members, (spec.d_model,), 1.0), member_constant(n_members, (spec.d_model,), 0.0)

    def _heads(self, x: Tensor) -> Tensor:
        """[M, B, T, H*dh] -> [M, B, H, T, dh]."""
        n_members, batch, positions, width = x.shape
        return x.view(n_members, batch, positions, self.n_heads, width // self.n_heads).transpose(2, 3)

    def forward(self, resid: Tensor, last_only: bool, with_pattern: bool = False, *, causal: bool = True,
                keys: Tensor | None = None, qkv: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Run the layer on resid [M, B, T, d] with queries at every position, or at the last one if `last_only`.

        Attention is causal, or bidirectional over the keys where `keys` [M, B, T] is True (every key if None).
        `qkv`: queries [M, B, Tq, d], keys and values [M, B, T, 2d] already computed (`qkv_tables`), else from resid.
        Returns the new residual stream at the query positions [M, B, Tq, d] (Tq = 1 if `last_only`, else T) and,
        if `with_pattern`, the attention pattern [M, B, H, Tq, T] (else None).
        """
        n_members, batch, positions, d = resid.shape
        first_query = positions - 1 if last_only else 0
        if qkv is None:
            h = _layer_norm(resid, self.ln_attn_gain, self.ln_attn_bias)  # [M, B, T, d]
            q = self._heads(_project(h[:, :, first_query:], self.W_Q))  # [M, B, H, Tq, dh]
            k = self._heads(_project(h, self.W_K))  # [M, B, H, T, dh]
            v = self._heads(_project(h, self.W_V))  # [M, B, H, T, dh]
        else:
            q, (k, v) = self._heads(qkv[0]), (self._heads(part) for part in qkv[1].split(d, dim=-1))
        pattern = None
        if with_pattern:  # explicit softmax, so that probes can read the pattern
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [M, B, H, Tq, T]
            if causal:
                key_pos = torch.arange(positions, device=resid.device)  # [T]
                allowed = key_pos <= key_pos[first_query:, None]  # [Tq, T]: a query sees itself and earlier keys
            else:
                allowed = keys[:, :, None, None, :] if keys is not None else torch.ones((), dtype=torch.bool)
            pattern = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # [M, B, H, Tq, T]
            mixed = pattern @ v  # [M, B, H, Tq, dh]
        elif last_only and (causal or keys is None):  # one query that sees every key: a few elementwise passes
            scores = (q * k).sum(-1, keepdim=True) / math.sqrt(q.shape[-1])  # [M, B, H, T, 1]
            mixed = (scores.softmax(dim=-2) * v).sum(-2, keepdim=True)  # [M, B, H, 1, dh]
        else:  # the fused kernel for queries at every position (or a masked LM's last one)
            mask = None if causal or keys is None else keys.reshape(n_members * batch, 1, 1, positions)
            cpu_bf16 = q.dtype == torch.bfloat16 and q.device.type == "cpu"  # its bf16 backward there: ~10x fp32's
            if cpu_bf16:
                q, k, v = q.float(), k.float(), v.float()
            with torch.autocast("cpu", enabled=False) if cpu_bf16 else contextlib.nullcontext():
                mixed = nn.functional.scaled_dot_product_attention(
                    q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), attn_mask=mask,
                    is_causal=causal and not last_only)  # [M*B, H, Tq, dh]
            mixed = mixed.unflatten(0, (n_members, batch))  # [M, B, H, Tq, dh]
        mixed = self.site_heads(mixed)  # [M, B, H, Tq, dh]
        mixed = mixed.transpose(2, 3).reshape(n_members, batch, -1, d)  # [M, B, Tq, H*dh]
        resid = resid[:, :, first_query:] + _project(mixed, self.W_O)  # [M, B, Tq, d]
        h = _layer_norm(resid, self.ln_mlp_gain, self.ln_mlp_bias)  # [M, B, Tq, d]
        h = self.site_mlp_in(h)
        hidden = activation(self.activation, _project(h, self.W_in) + _per_member(self.b_in, h))  # [M, B, Tq, d_mlp]
        hidden = self.site_mlp(hidden)
        if self.site_mlp_out.active:  # kept apart: the training path adds in the same order as always
            resid = resid + self.site_mlp_out(_project(hidden, self.W_out) + _per_member(self.b_out, resid))
        else:
            resid = resid + _project(hidden, self.W_out) + _per_member(self.b_out, resid)  # [M, B, Tq, d]
        return self.site_resid(resid), pattern


class EnsembleTransformer(HookedEnsemble):
    """M decoder-only transformers of one shape, trained as one module; member m depends only on its own slices.

    Sites, per layer l (axes [member, batch, position, feature] unless said): `heads.l` the heads' outputs
    [member, batch, head, position, feature], `mlp_in.l` the MLP's (normalized) input, `mlp.l` its hidden
    activations, `mlp_out.l` its output, `resid.l` the residual stream after the layer; `resid_final` the last
    residual stream after the final LayerNorm (what the unembedding reads); `resid`, `mlp` and `heads` are the last
    layer's.

    Parameters, drawn in this order from each member's init generator: W_E [M, V, d], W_pos [M, T, d], per layer
    (LayerNorm gain/bias), W_Q, W_K, W_V [M, d, H*dh], W_O [M, H*dh, d], (LayerNorm gain/bias), W_in [M, d, d_mlp],
    b_in [M, d_mlp], W_out [M, d_mlp, d], b_out [M, d], then (final LayerNorm gain/bias) and W_U [M, d, n_outputs].
    Weights are N(0, (init_scale / sqrt(fan_in))^2) with fan_in = d for W_E and W_pos; biases 0, gains 1.
    """

    def __init__(self, spec: TransformerSpec, *, vocab_size: int, n_positions: int, n_outputs: int,
                 init_seeds: list[int], init_scales: list[float] | None = None, objective: str | None = None,
                 pad_token: int | None = None):
        super().__init__()
        if not init_seeds:
            raise ValueError("init_seeds must name at least one member")
        if spec.d_model % spec.n_heads:
            raise ValueError(f"n_heads ({spec.n_heads}) must divide d_model ({spec.d_model})")
        self.n_members = len(init_seeds)
        if init_scales is None:  # one scale for all members: the spec's (1.0 by default)
            init_scales = [spec.init_scale] * self.n_members
        if len(init_scales) != self.n_members:
            raise ValueError(f"got {len(init_scales)} init_scales for {self.n_members} init_seeds")
        if objective not in (None, "causal", "masked"):
            raise ValueError(f"objective must be None, 'causal' or 'masked', got {objective!r}")
        self.spec, self.n_positions, self.n_outputs = spec, n_positions, n_outputs
        self.objective, self.pad_token = objective, pad_token
        self.init_scales = torch.tensor(init_scales, dtype=torch.float32)  # [M]
        generators, d = init_generators(init_seeds), spec.d_model
        self.W_E = member_normal(generators, (vocab_size, d), fan_in_std(d, self.init_scales))  # [M, V, d]
        self.W_pos = member_normal(generators, (n_positions, d), fan_in_std(d, self.init_scales))  # [M, T, d]
        self.blocks = nn.ModuleList(_Block(spec, generators, self.init_scales, i) for i in range(spec.n_layers))
        self.ln_final_gain, self.ln_final_bias = _Block._layer_norm_params(spec, self.n_members)
        self.W_U = member_normal(generators, (d, n_outputs), fan_in_std(d, self.init_scales))  # [M, d, n_outputs]
        last = spec.n_layers - 1
        self.site_final = Site("resid_final", ("member", "batch", "position", "feature"), last)
        self._declare_sites([*(site for b in self.blocks for site in (b.site_heads, b.site_mlp_in, b.site_mlp,
                                                                       b.site_mlp_out, b.site_resid)), self.site_final],
                            {"resid": f"resid.{last}", "mlp": f"mlp.{last}", "heads": f"heads.{last}"},
                            {f"mlp.{i}": (f"mlp_in.{i}", f"mlp_out.{i}") for i in range(spec.n_layers)})

    default_site = "resid"

    def _run(self, x: Tensor, last_only: bool, with_patterns: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Embed tokens [B, T] or [M, B, T] and run every layer (the last one at the last position if `last_only`).

        Returns the final residual stream [M, B, Tq, d] and, if `with_patterns`, each layer's attention pattern
        [M, B, H, Tq, T] (Tq = 1 in the last layer if `last_only`, else T); otherwise an empty list.
        """
        resid, causal, keys = self.embed(x)
        # A first layer's queries, keys and values depend only on (token, position): from tables when there are
        # fewer (token, position) pairs than positions in the batch (a full-batch modular task: 17x fewer rows)
        tabled = self.objective is None and not self.hooked and not with_patterns and self.W_E.shape[1] < x.shape[-2]
        qkv = self.qkv_tables(x, last_only and len(self.blocks) == 1) if tabled else None
        patterns = []
        for index, block in enumerate(self.blocks):
            resid, pattern = block(resid, last_only and index == len(self.blocks) - 1, with_patterns,
                                   causal=causal, keys=keys, qkv=qkv if index == 0 else None)  # [M, B, Tq, d]
            if with_patterns:
                patterns.append(pattern)
        return resid, patterns

    def embed(self, x: Tensor) -> tuple[Tensor, bool, Tensor | None]:
        """The residual stream entering the first layer [M, B, T, d] for tokens [B, T] or [M, B, T], whether attention
        is causal, and the keys a masked LM's queries may read [M, B, T] (None: every key)."""
        positions = x.shape[-1]
        if positions > self.n_positions:
            raise ValueError(f"got {positions} positions, the model has {self.n_positions}")
        resid = embed_tokens(self.W_E, x) + self.W_pos[:, None, :positions]  # [M, B, T, d]
        causal, keys = self.objective != "masked", None
        if not causal and self.pad_token is not None:  # a masked LM's queries never read padding
            keys = (x != self.pad_token).expand(resid.shape[:3])  # [M, B, T]
        return resid, causal, keys

    def qkv_tables(self, x: Tensor, last_only: bool) -> tuple[Tensor, Tensor]:
        """The first layer's queries [M, B, Tq, d] (Tq = 1 if `last_only`, else T) and keys and values [M, B, T, 2d]
        for tokens x [B, T] or [M, B, T], computed once per (token, position) and looked up."""
        block, (n_members, vocab, _), positions = self.blocks[0], self.W_E.shape, x.shape[-1]
        h = _layer_norm(self.W_E[:, None] + self.W_pos[:, :positions, None], block.ln_attn_gain,
                        block.ln_attn_bias)  # [M, T, V, d]
        first_query = positions - 1 if last_only else 0
        rows = x + torch.arange(positions, device=x.device) * vocab  # row of (token, position) in a flat table

        def look_up(table: Tensor, rows: Tensor) -> Tensor:  # table [M, T', V, w], rows [..., B, T'] -> [M, B, T', w]
            flat = table.reshape(n_members, -1, table.shape[-1])
            return member_lookup(flat, rows.flatten(-2)[..., None]).view(n_members, x.shape[-2], -1, table.shape[-1])

        queries = look_up(_project(h[:, first_query:], block.W_Q), rows[..., first_query:] - first_query * vocab)
        keys_values = look_up(_project(h, torch.cat([block.W_K, block.W_V], dim=-1)), rows)  # [M, B, T, 2d]
        return queries, keys_values

    def _unembed(self, resid: Tensor) -> Tensor:
        """Return logits from the residual stream resid [M, B, Tq, d]: [M, B, Tq, n_outputs] on a language task,
        else [M, B, n_outputs] at the last position."""
        if self.objective is not None or self.hooked:
            normed = self.site_final(_layer_norm(resid, self.ln_final_gain, self.ln_final_bias))  # [M, B, Tq, d]
            return _project(normed, self.W_U) if self.objective is not None else torch.bmm(normed[:, :, -1], self.W_U)
        last = _layer_norm(resid[:, :, -1], self.ln_final_gain, self.ln_final_bias)  # [M, B, d]
        return torch.bmm(last, self.W_U)  # [M, B, n_outputs]

    def forward(self, x: Tensor) -> Tensor:
        """Return logits for tokens [B, T] (shared) or [M, B, T]: [M, B, T, n_outputs] at every position on a
        language task, else [M, B, n_outputs] read at the last position (computed there alone unless hooks ask for
        every position)."""
        return self._unembed(self._run(x, last_only=self.objective is None and not self.every_position)[0])

    def logits_at(self, x: Tensor, at: Tensor) -> Tensor:
        """Logits at the positions `at` [B, T] bool alone, row-major: [M, N, n_outputs] with N = at.sum(), the
        values of forward(x)[:, at] without unembedding the other positions (a task that scores few tokens)."""
        resid = self._run(x, last_only=False)[0][:, at]  # [M, N, d]
        return self._unembed(resid[:, None])[:, 0]

    def readout_units(self) -> tuple[str, str, Tensor | None]:
        """The last layer's MLP neurons, which reach the logits linearly (W_out @ W_U) when there is no final
        LayerNorm."""
        linear = self.ln_final_gain is None
        return "mlp", "neuron", torch.bmm(self.blocks[-1].W_out, self.W_U) if linear else None  # [M, d_mlp, C]

    def token_tables(self) -> Tensor:
        """The token embedding W_E as one table shared by every position [M, 1, V, d]."""
        return self.W_E[:, None]

    def floats_per_example(self, x: Tensor) -> int:
        spec = self.spec
        return self.n_members * x.shape[-1] * max(spec.d_model, spec.d_mlp, spec.n_heads * x.shape[-1],
                                                  self.n_outputs)

    def member_module(self, index: int) -> MemberTransformer:
        """Member `index` as a plain transformer (`MemberTransformer`, with `as_hooked_transformer()`)."""
        return MemberTransformer(self, self._member_index(index))

    def forward_with_patterns(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Logits at every position [M, B, T, n_outputs] (language tasks) and each layer's attention pattern
        [M, B, H, T, T], from one pass (for probes; the training path never computes patterns)."""
        resid, patterns = self._run(x, last_only=False, with_patterns=True)
        return self._unembed(resid), patterns

    def attention_patterns(self, x: Tensor) -> list[Tensor]:
        """Return, per layer, the attention pattern [M, B, H, T, T] at every query position (for probes)."""
        return self._run(x, last_only=False, with_patterns=True)[1]
