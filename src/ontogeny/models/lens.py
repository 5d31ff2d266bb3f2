"""A member transformer as a TransformerLens `HookedTransformer`, weight for weight (TransformerLens is imported only
here, when asked for).

The layouts differ only in how heads are stored: ours keep the heads side by side in one [d, H*dh] matrix,
TransformerLens one [H, d, dh] matrix per kind; the attention and unembedding biases ontogeny's transformer does not
have are zero.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def hooked_transformer(model: nn.Module):
    """A `HookedTransformer` with the weights of `model` (a `plain.MemberTransformer`), on the same device."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it and its dependencies warn on import
            from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise ImportError("as_hooked_transformer needs TransformerLens: pip install transformer_lens") from None
    spec, blocks = model.spec, model.blocks
    d, heads = spec.d_model, spec.n_heads
    device = model.embed.weight.device
    config = HookedTransformerConfig(
        n_layers=len(blocks), d_model=d, n_ctx=model.pos_embed.weight.shape[0], d_head=d // heads, n_heads=heads,
        d_mlp=spec.d_mlp, d_vocab=model.embed.weight.shape[0], d_vocab_out=model.unembed.weight.shape[0],
        act_fn=spec.activation, normalization_type="LN" if spec.layer_norm else None,
        attention_dir="bidirectional" if model.objective == "masked" else "causal", default_prepend_bos=False,
        device=str(device))
    with warnings.catch_warnings():  # TransformerLens 3 deprecates HookedTransformer for its TransformerBridge, which
        warnings.simplefilter("ignore", DeprecationWarning)  # wraps Hugging Face models; ours is not one
        hooked = HookedTransformer(config)
    state = hooked.state_dict()  # its buffers (masks) as they are; every parameter from ours
    state.update({"embed.W_E": model.embed.weight, "pos_embed.W_pos": model.pos_embed.weight,
                  "unembed.W_U": model.unembed.weight.T, "unembed.b_U": torch.zeros_like(state["unembed.b_U"])})
    for i, block in enumerate(blocks):
        prefix, attn = f"blocks.{i}.", block.attn
        for kind, layer in (("Q", attn.q), ("K", attn.k), ("V", attn.v)):
            state[f"{prefix}attn.W_{kind}"] = layer.weight.T.reshape(d, heads, d // heads).transpose(0, 1)
            state[f"{prefix}attn.b_{kind}"] = torch.zeros_like(state[f"{prefix}attn.b_{kind}"])
        state[f"{prefix}attn.W_O"] = attn.o.weight.T.reshape(heads, d // heads, d)
        state[f"{prefix}attn.b_O"] = torch.zeros_like(state[f"{prefix}attn.b_O"])
        mlp_in, mlp_out = block.mlp[0], block.mlp[2]
        state.update({f"{prefix}mlp.W_in": mlp_in.weight.T, f"{prefix}mlp.b_in": mlp_in.bias,
                      f"{prefix}mlp.W_out": mlp_out.weight.T, f"{prefix}mlp.b_out": mlp_out.bias})
        if spec.layer_norm:
            for ours, theirs in ((block.ln1, "ln1"), (block.ln2, "ln2")):
                state.update({f"{prefix}{theirs}.w": ours.weight, f"{prefix}{theirs}.b": ours.bias})
    if spec.layer_norm:
        state.update({"ln_final.w": model.ln_final.weight, "ln_final.b": model.ln_final.bias})
    hooked.load_state_dict({name: tensor.detach().clone() for name, tensor in state.items()}, strict=True)
    return hooked.eval()
