"""Sparse autoencoders trained as one ensemble: member e = (model member, SAE seed), each with its own init and batches.

Each kind follows sae-lens 6.54 so that its numbers carry over (tests/test_sae_lens_anchor.py checks it):
- "topk" (Gao et al. 2024, sae-lens `TopKTrainingSAE`): pre = ((x - b_dec) W_enc + b_enc) * |W_dec,i|,
  z = relu(TopK(pre)), x_hat = sum_i z_i W_dec,i / |W_dec,i| + b_dec. sae-lens does not renormalize the decoder;
  its default `rescale_acts_by_decoder_norm=True` makes z the coefficient on each unit decoder direction instead.
  Loss: squared error summed over features, mean over rows, plus the AuxK loss on latents dead for `dead_window` steps.
- "relu-l1" (sae-lens `StandardTrainingSAE`): z = relu((x - b_dec) W_enc + b_enc), x_hat = z W_dec + b_dec,
  loss = squared error + l1 * sum_i z_i |W_dec,i| (weighting by the decoder norm stops the penalty from being
  dodged by shrinking z and growing W_dec).
- "transcoder" (sae-lens `Transcoder` with the TopK encoder above): the input is not shifted by b_dec, and the
  decoder predicts a different target of width d_out.
Init: sae-lens's "heuristic" init (Anthropic, April 2024 update): decoder rows of norm 0.1, encoder = decoder^T.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..seeds import generator

KINDS = ("topk", "relu-l1", "transcoder")


class EnsembleSAE(nn.Module):
    """E sparse autoencoders as one module: parameters W_enc [E, d_in, W], b_enc [E, W], W_dec [E, W, d_out],
    b_dec [E, d_out]; member e's init depends only on seeds[e]."""

    def __init__(self, d_in: int, width: int, seeds: Sequence[int], *, kind: str = "topk", k: int = 8,
                 l1: float = 1e-3, d_out: int | None = None, decoder_init_norm: float = 0.1,
                 aux_coefficient: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown SAE kind {kind!r}; known kinds: {', '.join(KINDS)}")
        if kind == "transcoder" and d_out is None:
            raise ValueError("a transcoder needs d_out, the width of the target it predicts")
        if kind != "transcoder" and d_out not in (None, d_in):
            raise ValueError(f"a {kind} SAE reconstructs its input: d_out must equal d_in = {d_in}, got {d_out}")
        if kind != "relu-l1" and not 1 <= k <= width:
            raise ValueError(f"k must be between 1 and the width {width}, got {k}")
        if len(seeds) == 0:
            raise ValueError("an SAE ensemble needs at least one seed")
        self.kind, self.k, self.l1, self.aux_coefficient = kind, k, l1, aux_coefficient
        self.d_in, self.width, self.d_out = d_in, width, d_out or d_in
        self.seeds = [int(s) for s in seeds]
        members = [self._init_member(seed, decoder_init_norm) for seed in self.seeds]
        self.W_enc = nn.Parameter(torch.stack([m[0] for m in members]))  # [E, d_in, W]
        self.b_enc = nn.Parameter(torch.zeros(len(seeds), width))  # [E, W]
        self.W_dec = nn.Parameter(torch.stack([m[1] for m in members]))  # [E, W, d_out]
        self.b_dec = nn.Parameter(torch.zeros(len(seeds), self.d_out))  # [E, d_out]

    def _init_member(self, seed: int, norm: float) -> tuple[Tensor, Tensor]:
        gen = generator("sae", seed)
        W_dec = torch.rand(self.width, self.d_out, generator=gen) * 2 - 1  # kaiming-uniform's shape; the scale
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True) * norm  # is replaced by the row norm anyway
        if self.kind != "transcoder":
            return W_dec.T.clone(), W_dec
        # sae-lens has no training transcoder: give the encoder columns the decoder rows' norm, drawn on their own
        W_enc = torch.rand(self.d_in, self.width, generator=gen) * 2 - 1
        return W_enc / W_enc.norm(dim=0, keepdim=True) * norm, W_dec

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def uses_topk(self) -> bool:
        return self.kind != "relu-l1"

    @torch.no_grad()
    def init_from(self, targets: Tensor) -> None:
        """Set b_dec to each member's target mean (mean, not the geometric median: sae-lens 6 starts at zero)."""
        self._check(targets, self.d_out, "targets")
        self.b_dec.copy_(targets.float().mean(1).to(self.b_dec.device))

    def decoder_norms(self) -> Tensor:
        """|W_dec,i| [E, W]."""
        return self.W_dec.norm(dim=-1)

    def pre_activations(self, x: Tensor) -> Tensor:
        """x [E, B, d_in] -> the encoder's output before the nonlinearity [E, B, W]."""
        # (x - b_dec) W_enc + b_enc written as x W_enc + (b_enc - b_dec W_enc): x needs no gradient then, which
        # saves a dense [E, B, W] x [E, W, d_in] product in backward (b_dec's gradient only needs the row sum)
        bias, weight = self.b_enc, self.W_enc
        if self.kind != "transcoder":
            bias = bias - torch.bmm(self.b_dec[:, None, :], weight)[:, 0]  # [E, W]
        if self.uses_topk:  # scale the weights, not the [E, B, W] output: half the elementwise work
            norms = self.decoder_norms()  # [E, W]
            bias, weight = bias * norms, weight * norms[:, None, :]
        return torch.baddbmm(bias[:, None, :], x, weight)  # [E, B, W]

    def encode(self, x: Tensor) -> Tensor:
        """x [E, B, d_in] -> latents z [E, B, W] (for TopK kinds: at most k nonzero per row)."""
        pre = self.pre_activations(x)
        if not self.uses_topk:
            return torch.relu(pre)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def decode(self, z: Tensor) -> Tensor:
        """z [E, B, W] -> reconstruction [E, B, d_out]."""
        if self.uses_topk:  # z is the coefficient on each unit decoder direction
            z = z * (1 / self.decoder_norms())[:, None, :]
        return torch.baddbmm(self.b_dec[:, None, :], z, self.W_dec)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [E, B, d_in] -> (reconstruction [E, B, d_out], z [E, B, W])."""
        z = self.encode(x)
        return self.decode(z), z

    def loss(self, x: Tensor, target: Tensor, dead: Tensor | None = None) -> Tensor:
        """Per-member training loss [E] (sum it for backward); `dead` [E, W] marks latents for the AuxK loss."""
        return self._loss_and_fired(x, target, dead)[0]

    def _loss_and_fired(self, x: Tensor, target: Tensor, dead: Tensor | None) -> tuple[Tensor, Tensor]:
        """(loss [E], which latents fired on this batch [E, W])."""
        pre = self.pre_activations(x)  # [E, B, W]
        if not self.uses_topk:
            z = torch.relu(pre)
            recon = torch.baddbmm(self.b_dec[:, None, :], z, self.W_dec)
            penalty = (z * self.decoder_norms()[:, None, :]).sum(-1).mean(-1)  # z >= 0, so |z| = z
            return _squared_error(recon, target) + self.l1 * penalty, (z > 0).any(1)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)  # [E, B, k]
        values = values.relu()
        recon = self._decode_sparse(values, indices) + self.b_dec[:, None, :]
        loss = _squared_error(recon, target)
        if dead is not None and bool(dead.any()):
            loss = loss + self.aux_coefficient * self._aux_loss(pre, dead, (target - recon).detach())
        return loss, _fired(values.detach(), indices, self.width)

    def _decode_sparse(self, values: Tensor, indices: Tensor) -> Tensor:
        """sum_j values[..., j] * W_dec[indices[..., j]] / |W_dec| [E, B, d_out], without the bias: one
        embedding_bag over the members' stacked decoders instead of a dense [E, B, W] matmul."""
        E, B, k = indices.shape
        coefficients = values * (1 / self.decoder_norms()).gather(-1, indices.flatten(1)).view(E, B, k)
        bags = (indices + self.width * torch.arange(E, device=indices.device)[:, None, None]).view(E * B, k)
        out = F.embedding_bag(bags, self.W_dec.reshape(E * self.width, self.d_out),
                              per_sample_weights=coefficients.reshape(E * B, k), mode="sum")
        return out.view(E, B, self.d_out)

    def _aux_loss(self, pre: Tensor, dead: Tensor, residual: Tensor) -> Tensor:
        """AuxK (Gao et al. 2024, App. B.1, as in sae-lens): the top k_aux dead latents' pre-activations
        reconstruct the residual; k_aux = d_out / 2, scaled down when fewer latents are dead [E]."""
        n_dead = dead.sum(-1)  # [E]
        half = self.d_out // 2
        k_aux = n_dead.clamp(max=half)  # [E]
        scale = (n_dead / half).clamp(max=1.0)
        # every member takes the top max(k_aux) dead latents, sorted, and keeps only its own first k_aux of them
        values, indices = torch.where(dead[:, None, :], pre, -torch.inf).topk(int(k_aux.max()), dim=-1)
        keep = torch.arange(values.shape[-1], device=values.device) < k_aux[:, None, None]
        recon = self._decode_sparse(torch.where(keep, values, 0.0), indices)
        return _squared_error(recon, residual) * scale

    def _check(self, tensor: Tensor, width: int, name: str) -> None:
        if tensor.dim() != 3 or tensor.shape[0] != self.n_members or tensor.shape[2] != width:
            raise ValueError(f"{name} must be [E={self.n_members}, N, {width}], got {list(tensor.shape)}")


def _fired(values: Tensor, indices: Tensor, width: int) -> Tensor:
    """Which latents are active (> 0) in any row [E, W], from the kept values and their indices [E, B, k]."""
    counts = torch.zeros(values.shape[0], width, device=values.device)  # a count: a bool scatter may lose an OR
    return counts.scatter_add_(-1, indices.flatten(1), (values > 0).flatten(1).float()) > 0


def _squared_error(recon: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over features, mean over rows, as sae-lens's mse_loss [E]."""
    return (recon - target).pow(2).sum(-1).mean(-1)


class MemberBatches:
    """Row indices [E, B] per step (`next()`): member e walks through random permutations of the N rows drawn from
    its own data seed's stream, so its batches do not depend on the other members."""

    def __init__(self, n_rows: int, batch_size: int, data_seeds: Sequence[int]):
        self.n_rows, self.batch_size = n_rows, batch_size
        self.generators = [generator("sae-batches", seed) for seed in data_seeds]
        self.buffer = torch.empty(len(data_seeds), 0, dtype=torch.long)

    def next(self) -> Tensor:
        while self.buffer.shape[1] < self.batch_size:
            epoch = torch.stack([torch.randperm(self.n_rows, generator=g) for g in self.generators])
            self.buffer = torch.cat([self.buffer, epoch], dim=1)
        batch, self.buffer = self.buffer[:, :self.batch_size], self.buffer[:, self.batch_size:]
        return batch


def _rows(data: Tensor, indices: Tensor) -> Tensor:
    """data [E, N, d] at indices [E, B] -> [E, B, d]."""
    return data[torch.arange(data.shape[0], device=data.device)[:, None], indices.to(data.device)]


@torch.no_grad()
def _clip_per_member(params: Sequence[Tensor], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ (as sae-lens applies at 1.0) on each member's own gradient, so clipping one
    member never scales another's."""
    norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params])  # [P, E]
    factor = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)  # [E]
    for p in params:
        p.grad.mul_(factor.view(-1, *[1] * (p.dim() - 1)))


def train_saes(sae: EnsembleSAE, inputs: Tensor, targets: Tensor, *, steps: int, batch_size: int, lr: float,
               data_seeds: Sequence[int], checkpoints: Sequence[int] = (),
               on_checkpoint: Callable[[int, dict[str, Tensor]], None] | None = None,
               betas: tuple[float, float] = (0.9, 0.999), clip_norm: float | None = 1.0,
               dead_window: int = 1000) -> None:
    """Train every member on its own minibatches of inputs [E, N, d_in] -> targets [E, N, d_out] (the same tensor
    for an SAE; an expanded view shared by several SAE seeds is fine) with Adam, per-member gradient clipping and
    sae-lens's dead-latent window for AuxK; call on_checkpoint(step, measure(...)) after `step` updates for each
    step in `checkpoints` (0..steps)."""
    sae._check(inputs, sae.d_in, "inputs")
    sae._check(targets, sae.d_out, "targets")
    if inputs.shape[1] != targets.shape[1] or inputs.shape[1] == 0:
        raise ValueError(f"inputs and targets need the same, nonzero number of rows: {inputs.shape[1]} vs "
                         f"{targets.shape[1]}")
    if len(data_seeds) != sae.n_members:
        raise ValueError(f"need one data seed per member: {len(data_seeds)} seeds for {sae.n_members} members")
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    if bad := [s for s in checkpoints if not 0 <= s <= steps]:
        raise ValueError(f"checkpoints must lie in 0..{steps}, got {bad}")
    # torch.optim.Adam is elementwise (its state is per entry), so each member's slice is updated on its own; the
    # fused kernel does the same arithmetic in one pass per tensor (30 steps of 64 SAEs: 10.6 -> 8.3 s)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, fused=True)
    batches = MemberBatches(inputs.shape[1], batch_size, data_seeds)
    steps_since_fired = torch.zeros(sae.n_members, sae.width, device=sae.W_dec.device)
    wanted = set(checkpoints)
    for step in range(steps + 1):
        if step in wanted and on_checkpoint is not None:
            on_checkpoint(step, measure(sae, inputs, targets))
        if step == steps:
            break
        rows = batches.next()
        x = _rows(inputs, rows).to(sae.W_dec.dtype)
        y = x if targets is inputs else _rows(targets, rows).to(sae.W_dec.dtype)
        dead = steps_since_fired > dead_window if sae.uses_topk else None
        loss, fired = sae._loss_and_fired(x, y, dead)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # the members' losses share no parameters: each gets its own gradient
        if clip_norm is not None:
            _clip_per_member(list(sae.parameters()), clip_norm)
        optimizer.step()
        steps_since_fired += 1
        steps_since_fired[fired] = 0


@torch.no_grad()
def measure(sae: EnsembleSAE, inputs: Tensor, targets: Tensor, *, chunk_elements: int = 1 << 22) -> dict[str, Tensor]:
    """Each [E]: "mse" (mean squared error per element), "fve" (fraction of variance explained: 1 - SSE / SS
    around each member's target mean), "l0" (mean active latents per row), "dead" (share of latents never active
    on these rows). Rows are taken in chunks so memory stays near `chunk_elements` floats."""
    sae._check(inputs, sae.d_in, "inputs")
    sae._check(targets, sae.d_out, "targets")
    E, N = inputs.shape[:2]
    chunk = max(1, chunk_elements // (E * max(sae.width, sae.d_out)))
    device = sae.W_dec.device
    mean = targets.float().mean(1, keepdim=True).to(device)  # [E, 1, d_out]
    sse, ss = torch.zeros(E, dtype=torch.float64, device=device), torch.zeros(E, dtype=torch.float64, device=device)
    active_count = torch.zeros(E, device=device)
    ever_active = torch.zeros(E, sae.width, dtype=torch.bool, device=device)
    for start in range(0, N, chunk):
        x, y = (data[:, start:start + chunk].to(device, torch.float32) for data in (inputs, targets))
        if sae.uses_topk:  # the k kept latents suffice: no dense [E, b, W] latents or decoding
            values, indices = sae.pre_activations(x).topk(sae.k, dim=-1, sorted=False)  # [E, b, k]
            values = values.relu()
            recon = sae._decode_sparse(values, indices) + sae.b_dec[:, None, :]
            ever_active |= _fired(values, indices, sae.width)
            active_count += (values > 0).sum((1, 2))
        else:
            recon, z = sae(x)
            ever_active |= (z > 0).any(1)
            active_count += (z > 0).sum((1, 2))
        sse += (recon - y).pow(2).sum((1, 2)).double()
        ss += (y - mean).pow(2).sum((1, 2)).double()
    result = {"mse": (sse / (N * sae.d_out)).float(), "fve": (1 - sse / ss).float(), "l0": active_count / N,
              "dead": 1 - ever_active.float().mean(1)}
    return {name: value.cpu() for name, value in result.items()}
