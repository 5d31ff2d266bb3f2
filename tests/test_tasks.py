"""Controlled datasets: labels against brute force, splits, seed independence from ensemble position, resume safety."""

import dataclasses
import re

import pytest
import torch

import ontogeny.tasks as tasks_module
from ontogeny import ModularSpec, MultitaskParitySpec, SparseParitySpec
from ontogeny.tasks.modular import MODULAR_OPS
from ontogeny.spec import SpecError, load_spec
from ontogeny.tasks import Batch, EvalSplit, Task, make_task

BIG = 10**9  # max_probe_examples that never caps


def brute_force(a: int, b: int, p: int, op: str) -> int:
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        return next(c for c in range(p) if (c * b) % p == a)  # the c with c * b = a
    return (a * a + b * b) % p


def assert_batches_equal(left: Batch, right: Batch) -> None:
    assert torch.equal(left.x, right.x) and torch.equal(left.y, right.y)
    assert (left.weight is None) == (right.weight is None)
    if left.weight is not None:
        assert torch.equal(left.weight, right.weight)


def test_public_api():
    assert sorted(tasks_module.__all__) == sorted([
        "IGNORE", "Batch", "EvalSplit", "GrammarSpec", "LetterCountingSpec", "MarkovICLSpec", "ModularSpec",
        "MultitaskParitySpec", "PairSplit", "QuestionFormationSpec", "SequenceSplit", "SparseParitySpec", "Task",
        "TokenSplit", "make_task"])


# ---- modular --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", MODULAR_OPS)
def test_modular_labels_match_brute_force(op):
    p = 7
    task = make_task([ModularSpec(p=p, op=op)], [0], BIG)
    assert (task.vocab_size, task.n_positions, task.n_outputs, task.loss) == (p + 1, 3, p, "cross_entropy")
    split = task.eval_splits()[0]
    pairs = [(a, b) for a in range(p) for b in range(p) if op != "/" or b != 0]
    assert split.example.tolist() == [a * p + b for a, b in pairs]  # stable ids, sorted
    assert split.x.tolist() == [[a, b, p] for a, b in pairs]
    assert split.y.tolist() == [brute_force(a, b, p, op) for a, b in pairs]
    assert split.x.dtype == split.y.dtype == torch.int64


def test_modular_division_is_multiplication_by_inverse():
    p = 11
    split = make_task([ModularSpec(p=p, op="/")], [0], BIG).eval_splits()[0]
    a, b = split.x[:, 0], split.x[:, 1]
    assert (b != 0).all()
    assert torch.equal(split.y * b % p, a)  # (a / b) * b = a
    inverse = split.y[a == 1]  # 1 / b for b = 1..p-1
    assert ((b[a == 1] * inverse) % p == 1).all()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_modular_masks_disjoint_covering_and_sized(fraction):
    p = 13
    train, test = make_task([ModularSpec(p=p, train_fraction=fraction)], [0], BIG).eval_splits()
    assert train.x is test.x and train.y is test.y and train.example is test.example  # one forward pass serves both
    assert train.member_mask.shape == (1, p * p)
    assert not (train.member_mask & test.member_mask).any()
    assert (train.member_mask | test.member_mask).all()
    assert int(train.member_mask.sum()) == round(fraction * p * p)
    assert train.subsets == {} and test.subsets == {}


def test_modular_train_sets_nest_across_fractions():
    fractions = [0.2, 0.4, 0.6, 0.8]
    task = make_task([ModularSpec(p=17, train_fraction=f, split_seed=3) for f in fractions], [0] * 4, BIG)
    mask = task.eval_splits()[0].member_mask  # [4, N]
    for smaller, larger in zip(mask[:-1], mask[1:]):
        assert not (smaller & ~larger).any()
    other = make_task([ModularSpec(p=17, train_fraction=0.2, split_seed=4)], [0], BIG).eval_splits()[0].member_mask
    assert not torch.equal(other[0], mask[0])  # another split seed, another split


def test_modular_member_data_independent_of_ensemble():
    member = ModularSpec(p=11, train_fraction=0.4, split_seed=2, batch_size=8)
    alone = make_task([member], [5], BIG)
    others = [dataclasses.replace(member, train_fraction=0.4, split_seed=s) for s in (0, 1)]
    crowd = make_task([others[0], member, others[1]], [1, 5, 9], BIG)
    for split_alone, split_crowd in zip(alone.eval_splits(), crowd.eval_splits()):
        assert torch.equal(split_alone.member_mask[0], split_crowd.member_mask[1])
        assert torch.equal(split_alone.x, split_crowd.x)
    for step in (0, 3, 11, 12, 40):  # 44 train examples, 5 steps per epoch: crosses epochs
        one, many = alone.batch(step), crowd.batch(step)
        assert one.x.shape == (8, 3)  # a member alone: one batch, shared by the ensemble of one
        assert torch.equal(one.x, many.member(1).x) and torch.equal(one.y, many.member(1).y)


def test_modular_minibatches_cover_each_epoch_and_resume():
    task = make_task([ModularSpec(p=7, train_fraction=0.5, batch_size=4)], [0], BIG)  # 24 train: 6 steps per epoch
    train_ids = set(task.eval_splits()[0].example[task.eval_splits()[0].member_mask[0]].tolist())
    epoch = torch.cat([task.batch(s).member(0).x for s in range(6)])  # [24, 3]
    assert set((epoch[:, 0] * 7 + epoch[:, 1]).tolist()) == train_ids
    assert not torch.equal(task.batch(0).x, task.batch(6).x)  # a new permutation per epoch
    expected = {s: task.batch(s) for s in (0, 5, 6, 13, 100)}
    fresh = make_task([ModularSpec(p=7, train_fraction=0.5, batch_size=4)], [0], BIG)
    for s in (100, 13, 0, 6, 5, 13):  # out of order, as after a resume
        assert_batches_equal(fresh.batch(s), expected[s])


def test_modular_full_batch_padding():
    specs = [ModularSpec(p=11, train_fraction=f) for f in (0.3, 0.6)]
    task = make_task(specs, [0, 1], BIG)
    batch = task.batch(0)
    counts = [round(0.3 * 121), round(0.6 * 121)]
    assert batch.x.shape == (2, counts[1], 3) and batch.y.shape == (2, counts[1])
    assert batch.weight.dtype == torch.float32
    assert batch.weight.sum(1).tolist() == counts
    assert batch.weight[0, : counts[0]].eq(1).all() and batch.weight[0, counts[0] :].eq(0).all()
    train = task.eval_splits()[0]
    for m in range(2):
        ids = batch.x[m, : counts[m], 0] * 11 + batch.x[m, : counts[m], 1]
        assert torch.equal(ids, train.example[train.member_mask[m]])
    assert task.batch(7) is batch  # cached full batch
    alone = make_task([specs[0]], [0], BIG).batch(0)
    assert alone.weight is None and torch.equal(alone.member(0).x, batch.x[0, : counts[0]])
    assert make_task([specs[0], specs[0]], [0, 1], BIG).batch(0).weight is None  # equal counts: no padding


def test_modular_probe_cap_is_a_fixed_sample():
    spec = ModularSpec(p=13, train_fraction=0.5)
    full = make_task([spec], [0], BIG).eval_splits()[0]
    capped = make_task([spec], [0], 50).eval_splits()[0]
    assert len(capped.example) == 50 and capped.member_mask.shape == (1, 50)
    assert torch.equal(capped.example, capped.example.sort().values)
    rows = torch.searchsorted(full.example, capped.example)
    assert torch.equal(full.y[rows], capped.y) and torch.equal(full.member_mask[:, rows], capped.member_mask)
    assert torch.equal(make_task([spec], [7], 50).eval_splits()[0].example, capped.example)


# ---- sparse parity --------------------------------------------------------------------------------------------


def test_sparse_parity_labels_are_product_of_secret_bits():
    task = make_task([SparseParitySpec(n=12, k=3, n_test=64, batch_size=16)], [0], BIG)
    assert task.secret.dtype == torch.int64 and task.secret.shape == (3,)
    assert torch.equal(task.secret, task.secret.sort().values)
    (test,) = task.eval_splits()
    assert test.name == "test" and torch.equal(test.example, torch.arange(64))
    assert test.x.dtype == test.y.dtype == torch.float32 and set(test.x.unique().tolist()) == {-1.0, 1.0}
    batch = task.batch(5)
    assert batch.x.shape == (16, 12) and batch.weight is None  # one member: a shared batch
    for x, y in ((test.x, test.y), (batch.member(0).x, batch.member(0).y)):
        expected = [float(torch.prod(torch.tensor([row[i] for i in task.secret.tolist()]))) for row in x.tolist()]
        assert y.tolist() == expected
    assert len(make_task([SparseParitySpec(n=12, n_test=64)], [0], 10).eval_splits()[0].example) == 10


def test_sparse_parity_online_independent_of_ensemble_and_resume_safe():
    spec = SparseParitySpec(n=10, k=2, batch_size=8)
    alone = make_task([spec], [3], BIG)
    crowd = make_task([spec] * 3, [0, 3, 8], BIG)
    steps = [0, 99, 100, 250, 5, 100]  # crosses blocks, goes back
    expected = {s: alone.batch(s) for s in steps}
    for s in reversed(steps):
        assert torch.equal(crowd.batch(s).x[1], expected[s].member(0).x)
        assert torch.equal(crowd.batch(s).y[1], expected[s].member(0).y)
    assert not torch.equal(crowd.batch(0).x[0], crowd.batch(0).x[1])  # other data seeds, other samples
    assert not torch.equal(alone.batch(0).x, alone.batch(1).x)  # fresh every step
    assert torch.equal(alone.eval_splits()[0].x, crowd.eval_splits()[0].x)


def test_sparse_parity_fixed_train_set():
    spec = SparseParitySpec(n=10, k=3, n_train=40, batch_size=8, n_test=20)
    task = make_task([spec, spec], [0, 1], BIG)
    train, test = task.eval_splits()
    assert (train.name, test.name) == ("train", "test") and train.member_mask is None
    assert train.x.shape == (40, 10) and torch.equal(train.example, torch.arange(40))
    epoch = torch.cat([task.batch(s).x[1] for s in range(5)])  # [40, n]: member 1 sees every train example once
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, train.x.tolist()))
    alone = make_task([spec], [1], BIG)
    for s in (7, 0, 12):
        assert torch.equal(alone.batch(s).member(0).x, task.batch(s).x[1])
    capped = make_task([spec], [1], 16).eval_splits()[0]
    assert len(capped.example) == 16 and torch.equal(capped.x, train.x[capped.example])


# ---- multitask parity -----------------------------------------------------------------------------------------


def test_multitask_inputs_and_labels():
    spec = MultitaskParitySpec(n_tasks=5, n=12, k=3, batch_size=64, n_test_per_task=10)
    task = make_task([spec], [0], BIG)
    assert task.n_inputs == 17 and task.n_outputs == 2 and task.loss == "cross_entropy"
    assert task.subtask_bits.shape == (5, 3) and task.subtask_bits.dtype == torch.int64
    (test,) = task.eval_splits()
    batch = task.batch(3)
    assert batch.x.shape == (64, 17) and batch.x.dtype == torch.float32 and batch.y.dtype == torch.int64
    for x, y in ((test.x, test.y), (batch.member(0).x, batch.member(0).y)):
        control, bits = x[:, :5], x[:, 5:]
        assert control.sum(1).eq(1).all() and set(x.unique().tolist()) <= {0.0, 1.0}
        subtask = control.argmax(1)
        expected = [int(sum(row[i] for i in task.subtask_bits[t].tolist())) % 2
                    for row, t in zip(bits.tolist(), subtask.tolist())]
        assert y.tolist() == expected


def test_multitask_test_subsets_partition():
    spec = MultitaskParitySpec(n_tasks=12, n=10, k=2, n_test_per_task=6)
    (test,) = make_task([spec], [0], BIG).eval_splits()
    assert torch.equal(test.example, torch.arange(72))
    assert sorted(test.subsets) == [f"task{i:02d}" for i in range(12)]
    stacked = torch.stack([test.subsets[f"task{i:02d}"] for i in range(12)])  # [T, N]
    assert stacked.sum(0).eq(1).all() and stacked.sum(1).eq(6).all()
    for i in range(12):
        assert test.x[test.subsets[f"task{i:02d}"], i].eq(1).all()
    (capped,) = make_task([spec], [0], 40).eval_splits()  # 40 // 12 = 3 per subtask
    assert len(capped.example) == 36 and all(mask.sum() == 3 for mask in capped.subsets.values())
    assert torch.equal(capped.x[capped.subsets["task04"]], test.x[test.subsets["task04"]][:3])


def test_multitask_zipf_frequencies():
    spec = MultitaskParitySpec(n_tasks=6, n=8, k=2, zipf_exponent=1.4, batch_size=500)
    task = make_task([spec], [0], BIG)
    rank = torch.arange(1, 7, dtype=torch.float64)
    assert torch.allclose(task.task_probs, rank**-1.4 / (rank**-1.4).sum())
    control = torch.cat([task.batch(s).member(0).x[:, :6] for s in range(0, 400, 2)])  # [100k, T], spans 4 blocks
    freq = control.mean(0).double()
    assert torch.allclose(freq, task.task_probs, atol=0.01)


def test_multitask_independent_of_ensemble_and_resume_safe():
    spec = MultitaskParitySpec(n_tasks=4, n=8, k=2, batch_size=32, n_test_per_task=5)
    alone = make_task([spec], [2], BIG)
    crowd = make_task([spec] * 3, [7, 2, 0], BIG)
    expected = {s: alone.batch(s) for s in (0, 150, 99, 100)}
    for s in (100, 0, 150, 99):
        assert torch.equal(crowd.batch(s).x[1], expected[s].member(0).x)
        assert torch.equal(crowd.batch(s).y[1], expected[s].member(0).y)
    assert torch.equal(alone.eval_splits()[0].x, crowd.eval_splits()[0].x)


def test_multitask_fixed_train_sets_nest_and_epochs_do_not_depend_on_the_ensemble():
    small, large = (MultitaskParitySpec(n_tasks=4, n=8, k=2, batch_size=32, n_train=n) for n in (100, 5000))
    fresh = MultitaskParitySpec(n_tasks=4, n=8, k=2, batch_size=32)
    crowd = make_task([fresh, small, large], [0, 3, 3], BIG)  # fresh samples beside two fixed sets
    alone = make_task([small], [3], BIG)
    assert torch.equal(crowd._train_x[:100], alone._train_x)  # a smaller set is a prefix of a larger one
    for s in (0, 4, 200):
        assert torch.equal(crowd.batch(s).x[1], alone.batch(s).x)
        assert torch.equal(crowd.batch(s).x[0], make_task([fresh], [0], BIG).batch(s).x)
    freq = crowd._train_x[:, :4].mean(0).double()  # the fixed set keeps the Zipf mixture
    assert torch.allclose(freq, crowd.task_probs, atol=0.02)
    for bad, message in ((["task.n_train=10"], "task.n_train: must be 0 (fresh samples) or at least task.batch_size"),
                         (["task.n_train=5000", "task.intervention=drop task1"],
                          "task.intervention: applies to fresh")):
        with pytest.raises(SpecError, match=re.escape(message)):
            load_spec("multitask-parity", ["task.n_tasks=4", "task.batch_size=32", *bad])


# ---- make_task validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, other",
    [
        (ModularSpec(), ModularSpec(p=13)),
        (ModularSpec(), ModularSpec(batch_size=16)),
        (ModularSpec(), SparseParitySpec()),
        (SparseParitySpec(), SparseParitySpec(split_seed=1)),
        (SparseParitySpec(), SparseParitySpec(k=4)),
        (MultitaskParitySpec(), MultitaskParitySpec(split_seed=1)),
        (MultitaskParitySpec(), MultitaskParitySpec(zipf_exponent=1.0)),
    ],
)
def test_make_task_rejects_members_differing_in_shared_fields(first, other):
    with pytest.raises(ValueError):
        make_task([first, other], [0, 1], BIG)


def test_make_task_allows_member_fields_and_checks_lengths():
    task = make_task([ModularSpec(p=7), ModularSpec(p=7, train_fraction=0.5, split_seed=9)], [0, 0], BIG)
    assert isinstance(task, Task) and task.n_members == 2
    assert all(isinstance(split, EvalSplit) for split in task.eval_splits())
    with pytest.raises(ValueError):
        make_task([ModularSpec(p=7)], [0, 1], BIG)


def test_members_of_one_data_order_share_one_batch():
    """Drawn once, not once per member: the model then runs a layer as one product for all (shared_input_matmul)."""
    spec = SparseParitySpec(n=12, k=3, batch_size=16)
    shared, alone = make_task([spec] * 4, [3] * 4, BIG), make_task([spec], [3], BIG)
    mixed = make_task([spec] * 2, [3, 4], BIG)
    for step in (0, 99, 100):
        assert shared.batch(step).x.shape == (16, 12) and shared.batch(step).y.shape == (16,)
        assert torch.equal(shared.batch(step).x, alone.batch(step).x)
        assert torch.equal(mixed.batch(step).member(0).x, alone.batch(step).x)
    modular = [ModularSpec(p=11, train_fraction=0.4, batch_size=0)] * 3
    assert make_task(modular, [0, 1, 2], BIG).batch(0).x.shape == (48, 3)  # full batch: data seeds do not matter
    split = [dataclasses.replace(modular[0], split_seed=s) for s in (0, 1)]
    assert make_task(split, [0, 0], BIG).batch(0).x.shape == (2, 48, 3)  # other training sets: per member
