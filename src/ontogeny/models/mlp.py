"""Ensemble-native MLP: every weight has a leading member axis, the forward pass is batched matmul."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..spec import MODELS, Check, ModelSpec, Sizes
from .layers import (activation, fan_in_std, init_generators, member_constant, member_dot, member_lookup,
                     member_normal, shared_input_matmul)
from .plain import MemberMLP
from .sites import HookedEnsemble, Site


EVAL_MEMBERS = 8  # members per forward pass when evaluating without gradients


@MODELS.register("mlp")
@dataclass(frozen=True)
class MLPSpec(ModelSpec):
    """An MLP: per-position token embeddings (or raw inputs) -> `depth` hidden layers -> outputs."""

    name: str = "mlp"
    width: int = 128
    depth: int = 1
    activation: str = "relu"  # relu | gelu | square (Gromov 2023)
    bias: bool = True
    init_scale: float = 1.0

    def check(self, check: Check, sizes: Sizes) -> None:
        check(self.width >= 1, "model.width", "must be at least 1")
        check(self.depth >= 1, "model.depth", "must be at least 1")
        check(self.activation in ("relu", "gelu", "square"), "model.activation", "must be relu, gelu or square")
        check(sizes.objective is None, "model.name",
              "the MLP gives one output per example; a language task needs model.name = 'transformer'")

    def memory(self, sizes: Sizes) -> tuple[int, int]:
        inputs = sizes.vocab_size * sizes.n_positions if sizes.vocab_size else sizes.n_inputs
        params = inputs * self.width + (self.depth - 1) * self.width**2 + self.width * sizes.n_outputs
        return params, self.depth * self.width * 3

    def build(self, task, init_seeds, init_scales=None) -> EnsembleMLP:
        return EnsembleMLP(self, n_outputs=task.n_outputs, init_seeds=init_seeds, vocab_size=task.vocab_size,
                           n_positions=task.n_positions, n_inputs=task.n_inputs, init_scales=init_scales)


class EnsembleMLP(HookedEnsemble):
    """M independent MLPs trained as one module.

    Token inputs (`vocab_size` set) get one embedding table per position, which is the same as a linear layer on
    the concatenated one-hot tokens (Gromov 2023), done as a lookup. Float inputs go through a linear layer.

    Sites, per hidden layer i: `hidden_in.i` [member, batch, feature] the layer's input (layer 0: the one-hot tokens
    laid end to end, or the features; computed only while hooked), `hidden.i` [member, batch, feature] its
    activations; `hidden` is the last layer's.
    """

    default_site = "hidden"

    def __init__(self, spec: MLPSpec, *, n_outputs: int, init_seeds: list[int], vocab_size: int | None = None,
                 n_positions: int = 0, n_inputs: int = 0, init_scales: list[float] | None = None):
        super().__init__()
        self.spec, self.n_members, self.vocab_size = spec, len(init_seeds), vocab_size
        scales = torch.as_tensor(init_scales if init_scales is not None else [spec.init_scale] * self.n_members,
                                 dtype=torch.float32)  # [M]
        gens, width = init_generators(init_seeds), spec.width
        if vocab_size:
            # std as nn.Linear on the concatenated one-hot tokens, fan-in n_positions * vocab_size (for modular
            # arithmetic 3(p + 1): a, b and '='; Gromov 2023's input is a and b alone, 2p)
            self.embed = member_normal(gens, (n_positions, vocab_size, width),
                                       fan_in_std(n_positions * vocab_size, scales))
        else:
            self.w_in = member_normal(gens, (n_inputs, width), fan_in_std(n_inputs, scales))
        self.b_in = member_constant(self.n_members, (width,)) if spec.bias else None
        self.hidden = nn.ParameterList()
        self.hidden_bias = nn.ParameterList()
        for _ in range(spec.depth - 1):
            self.hidden.append(member_normal(gens, (width, width), fan_in_std(width, scales)))
            if spec.bias:
                self.hidden_bias.append(member_constant(self.n_members, (width,)))
        self.w_out = member_normal(gens, (width, n_outputs), fan_in_std(width, scales))
        self.b_out = member_constant(self.n_members, (n_outputs,)) if spec.bias else None
        rows = ("member", "batch", "feature")
        self._layer_sites = [(Site(f"hidden_in.{i}", rows, i), Site(f"hidden.{i}", rows, i))
                             for i in range(spec.depth)]
        self._declare_sites([site for pair in self._layer_sites for site in pair],
                            {"hidden": f"hidden.{spec.depth - 1}"},
                            {f"hidden.{i}": (f"hidden_in.{i}", f"hidden.{i}") for i in range(spec.depth)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens [B, T] / [M, B, T] (int64) or features [B, n] / [M, B, n] -> logits [M, B, n_outputs]."""
        if torch.is_grad_enabled() or self.n_members <= EVAL_MEMBERS or x.device.type != "cpu" or self.hooked:
            return self._forward(x, None)
        # evaluation on a CPU: a few members at a time keeps their activations in cache (probes at 512 members: 1.5x)
        chunks = [slice(start, start + EVAL_MEMBERS) for start in range(0, self.n_members, EVAL_MEMBERS)]
        return torch.cat([self._forward(x if x.dim() == 2 else x[chunk], chunk) for chunk in chunks])

    def _forward(self, x: torch.Tensor, members: slice | None) -> torch.Tensor:
        """The forward pass of `members` (None: all) alone; x holds their inputs only (or the shared batch)."""
        def take(param):  # not param[:] for all members: its backward would write a zero-filled copy of the weights
            return param if members is None or param is None else param[members]

        one_output = self.w_out.shape[-1] == 1  # hinge: a product-sum head
        # the last ReLU then runs inside the head's Function (not while hooked: its site needs the activations)
        fuse = one_output and self.spec.activation == "relu" and not self.hooked
        h = self._hidden(x, take, activate_last=not fuse)  # [M, B, width]
        if one_output:
            out = member_dot(h, take(self.w_out)[..., 0], relu=fuse)[..., None]  # [M, B, 1]
        else:
            out = torch.bmm(h, take(self.w_out))  # [M, B, n_outputs]
        return out if self.b_out is None else out + take(self.b_out)[:, None]

    def member_module(self, index: int) -> MemberMLP:
        """Member `index` as a plain `nn.Sequential` (`MemberMLP`)."""
        return MemberMLP(self, self._member_index(index))

    def readout_units(self) -> tuple[str, str, torch.Tensor]:
        """The last hidden layer's units map linearly to the logits through w_out [M, width, outputs]."""
        return "hidden", "unit", self.w_out

    def token_tables(self) -> torch.Tensor | None:
        """The per-position embedding tables [M, T, V, width] (None for float inputs)."""
        return self.embed if self.vocab_size else None

    embedding_is_neurons = True

    def floats_per_example(self, x: torch.Tensor) -> int:
        first = self.embed.shape[1] * self.embed.shape[2] if self.vocab_size else self.w_in.shape[-2]
        return self.n_members * max(self.spec.width, self.w_out.shape[-1], first)

    def _hidden(self, x: torch.Tensor, take, activate_last: bool) -> torch.Tensor:
        if self.vocab_size:
            h = self._embed(x, take)  # [M, B, width]
        elif x.dim() == 2:  # one batch for every member (they share a data seed)
            h = shared_input_matmul(x, take(self.w_in))  # [M, B, width]
        else:
            h = torch.bmm(x, take(self.w_in))  # [M, B, width]
        if self._layer_sites[0][0].active:
            self._layer_sites[0][0](self._first_input(x))
        biases = list(self.hidden_bias) if self.spec.bias else [None] * len(self.hidden)
        h = self._activate(h, take(self.b_in), activate=activate_last or bool(self.hidden))
        h = self._layer_sites[0][1](h)
        for i, (weight, bias) in enumerate(zip(self.hidden, biases)):
            h = self._layer_sites[i + 1][0](h)
            h = self._activate(torch.bmm(h, take(weight)), take(bias),
                               activate=activate_last or i < len(self.hidden) - 1)
            h = self._layer_sites[i + 1][1](h)
        return h

    def _first_input(self, x: torch.Tensor) -> torch.Tensor:
        """The first layer's input as the layer sees it [M, B, d_in]: one-hot tokens laid end to end, or features
        (read only: the layer itself runs as a lookup)."""
        if self.vocab_size:
            x = nn.functional.one_hot(x, self.vocab_size).flatten(-2).float()
        return x.expand(self.n_members, *x.shape[-2:])

    def _activate(self, h: torch.Tensor, bias: torch.Tensor | None, activate: bool = True) -> torch.Tensor:
        """activation(h + bias), in place where autograd allows: h is a fresh matmul or lookup result, and each full
        [M, B, width] temporary costs a pass over memory."""
        if bias is not None:
            h = h.add_(bias[:, None])
        if not activate:
            return h
        return torch.relu_(h) if self.spec.activation == "relu" else activation(self.spec.activation, h)

    def _embed(self, tokens: torch.Tensor, take) -> torch.Tensor:
        """Sum of per-position embeddings -> [M, B, width]: one lookup in the positions' tables laid end to end."""
        n_positions, vocab = self.embed.shape[1:3]
        rows = tokens + torch.arange(n_positions, device=tokens.device) * vocab  # [(M,) B, T] into [T * V]
        return member_lookup(take(self.embed).flatten(1, 2), rows)
