"""The hand-written autograd pieces of the ensemble MLP, and the allocator setting of training processes."""

import ctypes

import pytest
import torch

from ontogeny import MLPSpec
from ontogeny.models import EnsembleMLP
from ontogeny.models.layers import member_dot, shared_input_matmul
from ontogeny.train.malloc import _glibc, reuse_freed_memory
from test_optim import plain_mlp


def test_hand_written_backwards_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(shared_input_matmul, (x, w))
    h = torch.randn(4, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(member_dot, (h, v))
    # with the ReLU inside (it overwrites its input, so each call gets a fresh copy, as a layer's output is)
    assert torch.autograd.gradcheck(lambda z, v: member_dot(z.clone(), v, relu=True), (h, v))
    z = h.detach().clone()
    torch.testing.assert_close(member_dot(z, v.detach(), relu=True), (h.relu() * v[:, None]).sum(-1))
    assert torch.equal(z, h.detach().relu())  # in place, as the docstring says


@pytest.mark.parametrize("depth", [1, 2])
def test_one_output_mlp_on_a_shared_batch_matches_plain_modules(depth):
    """The parity path (shared +-1 batch, one hinge output): every member's gradient is its plain module's."""
    ensemble = EnsembleMLP(MLPSpec(width=16, depth=depth), n_outputs=1, init_seeds=[0, 1, 2], n_inputs=7)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (32, 7), generator=gen).float() * 2 - 1
    y = torch.randint(0, 2, (32,), generator=gen).float() * 2 - 1
    torch.relu(1 - ensemble(x)[..., 0] * y).mean(1).sum().backward()
    for m in range(3):
        plain = plain_mlp(ensemble, m)
        torch.relu(1 - plain(x)[:, 0] * y).mean().backward()
        torch.testing.assert_close(ensemble.w_in.grad[m].T, plain[0].weight.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ensemble.b_in.grad[m], plain[0].bias.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ensemble.w_out.grad[m].T, plain[-1].weight.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("inputs", ["shared", "per-member", "tokens"])
def test_evaluation_in_member_chunks_equals_the_training_forward(inputs):
    """Without gradients a CPU forward runs 8 members at a time; every member's logits stay bit for bit the same."""
    gen = torch.Generator().manual_seed(2)
    if inputs == "tokens":
        model = EnsembleMLP(MLPSpec(width=16), n_outputs=5, init_seeds=list(range(19)), vocab_size=6, n_positions=3)
        x = torch.randint(0, 6, (19, 11, 3), generator=gen)
    else:
        model = EnsembleMLP(MLPSpec(width=16, depth=2), n_outputs=1, init_seeds=list(range(19)), n_inputs=7)
        x = torch.randn(11, 7, generator=gen) if inputs == "shared" else torch.randn(19, 11, 7, generator=gen)
    with torch.no_grad():
        chunked = model(x)
    assert torch.equal(chunked, model(x).detach())


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mapped_blocks(libc) -> int:
    libc.mallinfo2.restype = _Mallinfo2
    return libc.mallinfo2().hblks


def test_training_processes_take_large_blocks_from_the_heap():
    """Inside `reuse_freed_memory` a 64 MiB tensor comes from the reusable heap, not a fresh mapping; after it,
    glibc maps such blocks again (and the freed heap went back to the OS)."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33")
    with reuse_freed_memory():
        before = _mapped_blocks(libc)
        block = torch.empty(16 << 20)  # 64 MiB
        assert _mapped_blocks(libc) == before
        del block
    before = _mapped_blocks(libc)
    block = torch.empty(16 << 20)  # kept alive while counted
    assert _mapped_blocks(libc) == before + 1 and block.numel() == 16 << 20
