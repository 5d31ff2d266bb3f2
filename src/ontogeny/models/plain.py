"""One member of an ensemble as a plain PyTorch model: standard `nn.Linear` / `nn.Embedding` / `nn.LayerNorm` layers
holding that member's weights, with the same outputs as the member has inside the ensemble.

For the tools researchers already use on single models (their own notebooks, TransformerLens through
`MemberTransformer.as_hooked_transformer()`, anything that takes an `nn.Module`). Built by each ensemble model's
`member_module(index)`; `ontogeny.rebuild.member_model(run, member, step)` gives one from a run's saved weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OneHot(nn.Module):
    """Tokens [B, T] -> their one-hot codes laid end to end [B, T * vocab] (the MLP's input on token tasks)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.one_hot(tokens, self.vocab_size).flatten(-2).float()


class Square(nn.Module):
    """x^2, the activation of Gromov 2023's modular-arithmetic MLP."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


def member_slice(param: Tensor | None, index: int) -> Tensor | None:
    """Member `index`'s slice of an ensemble parameter [M, ...] (None for a parameter the model does not have)."""
    return None if param is None else param[index].detach()


def activation_module(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "square": Square}[name]()


def linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """nn.Linear computing x @ weight + bias, from an ensemble's weight [in, out] (nn.Linear stores [out, in])."""
    layer = nn.Linear(*weight.shape, bias=bias is not None, device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight.T)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def layer_norm(gain: Tensor | None, bias: Tensor | None, width: int) -> nn.Module:
    if gain is None:
        return nn.Identity()
    norm = nn.LayerNorm(width, device=gain.device)
    with torch.no_grad():
        norm.weight.copy_(gain)
        norm.bias.copy_(bias)
    return norm


class MemberAttention(nn.Module):
    """Multi-head attention without biases: causal, or bidirectional over the keys that are not padding."""

    def __init__(self, n_heads: int, w_q: Tensor, w_k: Tensor, w_v: Tensor, w_o: Tensor):
        super().__init__()
        self.n_heads = n_heads
        self.q, self.k, self.v, self.o = (linear(w, None) for w in (w_q, w_k, w_v, w_o))

    def forward(self, x: Tensor, causal: bool, keys: Tensor | None) -> Tensor:
        batch, positions, d = x.shape

        def heads(t: Tensor) -> Tensor:  # [B, T, d] -> [B, H, T, dh]
            return t.view(batch, positions, self.n_heads, d // self.n_heads).transpose(1, 2)

        mask = None if causal or keys is None else keys[:, None, None, :]  # [B, 1, 1, T]
        mixed = nn.functional.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)),
                                                           attn_mask=mask, is_causal=causal)  # [B, H, T, dh]
        return self.o(mixed.transpose(1, 2).reshape(batch, positions, d))


class MemberBlock(nn.Module):
    """One pre-LN (or LayerNorm-free) transformer layer: x + attn(ln1(x)), then + mlp(ln2(x))."""

    def __init__(self, ln1: nn.Module, attn: MemberAttention, ln2: nn.Module, mlp: nn.Sequential):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = ln1, attn, ln2, mlp

    def forward(self, x: Tensor, causal: bool, keys: Tensor | None) -> Tensor:
        x = x + self.attn(self.ln1(x), causal, keys)
        return x + self.mlp(self.ln2(x))


class MemberTransformer(nn.Module):
    """One member of an `EnsembleTransformer`: tokens [B, T] -> logits [B, n_outputs] at the last position on a
    classification task, or [B, T, n_outputs] at every position on a language task (`objective` causal / masked)."""

    def __init__(self, ensemble, index: int):
        super().__init__()
        spec = ensemble.spec
        self.spec, self.objective, self.pad_token = spec, ensemble.objective, ensemble.pad_token

        def take(param):
            return member_slice(param, index)

        self.embed = nn.Embedding.from_pretrained(take(ensemble.W_E).clone(), freeze=False)
        self.pos_embed = nn.Embedding.from_pretrained(take(ensemble.W_pos).clone(), freeze=False)
        blocks = []
        for block in ensemble.blocks:
            attn = MemberAttention(spec.n_heads, *(take(w) for w in (block.W_Q, block.W_K, block.W_V, block.W_O)))
            mlp = nn.Sequential(linear(take(block.W_in), take(block.b_in)), activation_module(spec.activation),
                                linear(take(block.W_out), take(block.b_out)))
            blocks.append(MemberBlock(layer_norm(take(block.ln_attn_gain), take(block.ln_attn_bias), spec.d_model),
                                      attn,
                                      layer_norm(take(block.ln_mlp_gain), take(block.ln_mlp_bias), spec.d_model),
                                      mlp))
        self.blocks = nn.ModuleList(blocks)
        self.ln_final = layer_norm(take(ensemble.ln_final_gain), take(ensemble.ln_final_bias), spec.d_model)
        self.unembed = linear(take(ensemble.W_U), None)

    def forward(self, tokens: Tensor) -> Tensor:
        positions = tokens.shape[-1]
        x = self.embed(tokens) + self.pos_embed.weight[:positions]  # [B, T, d]
        causal = self.objective != "masked"
        keys = tokens != self.pad_token if not causal and self.pad_token is not None else None  # [B, T]
        for block in self.blocks:
            x = block(x, causal, keys)
        logits = self.unembed(self.ln_final(x))  # [B, T, n_outputs]
        return logits if self.objective is not None else logits[:, -1]

    def as_hooked_transformer(self):
        """The same model as a TransformerLens `HookedTransformer` (needs `transformer_lens`), whose logits at every
        position equal this model's (at the last position on a classification task). A masked LM's padding is
        not masked by TransformerLens unless you pass its `attention_mask`."""
        from .lens import hooked_transformer

        return hooked_transformer(self)


class MemberMLP(nn.Sequential):
    """One member of an `EnsembleMLP` as `nn.Sequential`: (one-hot tokens,) Linear, activation, ..., Linear."""

    def __init__(self, ensemble, index: int):
        def take(param):
            return member_slice(param, index)

        spec = ensemble.spec
        if ensemble.vocab_size:
            layers = [OneHot(ensemble.vocab_size), linear(take(ensemble.embed).flatten(0, 1), take(ensemble.b_in))]
        else:
            layers = [linear(take(ensemble.w_in), take(ensemble.b_in))]
        biases = list(ensemble.hidden_bias) if spec.bias else [None] * len(ensemble.hidden)
        for weight, bias in zip(ensemble.hidden, biases):
            layers += [activation_module(spec.activation), linear(take(weight), take(bias))]
        layers += [activation_module(spec.activation), linear(take(ensemble.w_out), take(ensemble.b_out))]
        super().__init__(*layers)
