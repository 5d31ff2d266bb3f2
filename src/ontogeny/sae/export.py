"""One SAE of an `ontogeny sae` run as a sae-lens directory (cfg.json + sae_weights.safetensors), so that
`sae_lens.SAE.load_from_disk` reads it and computes the same latents and reconstructions. Written through sae-lens's
own config and `save_model` (the `sae` extra), not by hand."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..store import Run


def to_sae_lens(run: Run, member: int, out: str | Path) -> Path:
    """Write SAE `member` of the SAE run `run` (its weights at the end of its training) into the directory `out`;
    return it. ValueError (one line) for a transcoder, which sae-lens's SAE classes do not hold."""
    try:
        from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
        from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig
    except ImportError:
        raise ValueError("exporting to sae-lens needs it installed: pip install 'ontogeny[sae]'") from None
    if run.producer.get("kind") != "sae":
        raise ValueError(f"{run.path}: not an SAE run (made by {run.producer.get('kind', '?')!r})")
    members = run.members().set_index("member")
    if member not in members.index:
        raise ValueError(f"{run.path}: no SAE member {member} (members 0..{len(members) - 1})")
    row = members.loc[member]
    weights = run.checkpoints()
    weights = weights[weights.member == member].sort_values("step")
    state = load_file(str(run.path / weights.path.iloc[-1]))
    d_in, width = state["W_enc"].shape
    if row["kind"] == "topk":
        # ours scales the latents by the decoder rows' norms, as sae-lens trains TopK SAEs (tests/test_sae_lens_anchor)
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=width, k=int(row["k"]), rescale_acts_by_decoder_norm=True))
    elif row["kind"] == "relu-l1":
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=width))
    else:
        raise ValueError(f"SAE member {member} is a {row['kind']}: sae-lens's SAE classes hold topk and relu-l1 only")
    with torch.no_grad():
        sae.load_state_dict({name: state[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")})
    out = Path(out)
    sae.save_model(out)
    return out
