"""The language tasks end to end: per-token rows and the tokens table, minimal pairs and the probes against direct
computation on the saved model, the implicit-parse UAS on attention set by hand, resume, and bad input."""

import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import ontogeny as og
from ontogeny.exceptions import SpecError
from ontogeny.models import make_model
from ontogeny.seeds import stream_seed
from ontogeny.spec import load_spec
from ontogeny.tasks import IGNORE, make_task
from ontogeny.tasks.grammar import BOS, MASK, PAD, GrammarSpec
from ontogeny.tasks.grammar_gen import sample

TINY_MODEL = ["model.d_model=16", "model.n_heads=2", "model.d_mlp=32"]
MARKOV = ["steps=12", "seeds=2", "record.every=4", "record.weights_every=12", "task.n_test=8", "task.n_probe=4",
          "task.length=16", *TINY_MODEL]
GRAMMAR = ["steps=12", "seeds=2", "record.every=4", "record.weights_every=12", "task.n_train=300", "task.n_test=20",
           "task.n_probe=10", "task.n_pairs=5", "model.n_layers=2", *TINY_MODEL]


def rebuild(run, step):
    """The run's task and its model with the members' weights at `step`."""
    spec = load_spec(run.path / "spec.toml")
    members = run.members().sort_values("member")
    task = make_task([spec.task] * len(members), members.data_seed.tolist(), spec.record.max_probe_examples)
    model = make_model(spec.model, task, members.init_seed.tolist())
    from safetensors.torch import load_file
    weights = [load_file(run.path / p) for p in run.checkpoints().query("step == @step").sort_values("member").path]
    model.load_state_dict({name: torch.stack([w[name] for w in weights]) for name in weights[0]
                           if not name.startswith("preconditioner.")})
    return task, model.eval()


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    return og.run("icl-markov", overrides=MARKOV, out=tmp_path_factory.mktemp("markov") / "run")


@pytest.fixture(scope="module", params=["masked", "causal"])
def grammar(request, tmp_path_factory):
    overrides = [*GRAMMAR, f"task.objective={request.param}"]
    return og.run("syntax-drops", overrides=overrides, out=tmp_path_factory.mktemp("grammar") / "run")


def test_markov_records_every_token_and_the_strategy_distances(markov):
    tokens, examples = markov.table("tokens"), markov.examples()
    assert len(tokens) == 8 * 16 and tokens.sequence.max() == 7 and tokens.position.max() == 15
    assert set(tokens.text) <= {"0", "1", "2"}
    at_end = examples[(examples.step == 12) & (examples.member == 0)]
    assert len(at_end) == len(tokens)
    task, model = rebuild(markov, 12)
    split = task.eval_splits()[0]
    with torch.no_grad():
        logits = model(split.x)  # [M, S, T, k]
    loss = torch.nn.functional.cross_entropy(logits[0].reshape(-1, 3), split.y.reshape(-1), reduction="none")
    np.testing.assert_allclose(at_end.sort_values("example").loss, loss.numpy(), rtol=1e-5, atol=1e-6)
    # tokens rows name the target of each example
    merged = at_end.merge(tokens, on="example")
    assert (merged.token.to_numpy() == split.y.reshape(-1).numpy()[merged.example.to_numpy()]).all()
    # KL to the in-context references, computed directly from the model on the probe chains
    scalars = markov.scalars().query("step == 12 and member == 1").set_index("name").value
    log_p = logits[1, :4].log_softmax(-1).double()  # [S, T, k]
    for name, ref in task.references.items():
        ref = ref.view(4, 16, 3).double()
        kl = (ref * (torch.log(ref.clamp_min(1e-300)) - log_p)).sum(-1)  # [S, T]
        want = kl[:, -1].mean() if name.startswith("edelman_") else kl.mean()  # theirs at the last token only
        assert scalars[f"kl/{name}"] == pytest.approx(float(want), rel=1e-4)
    assert not any(name.startswith("uas/") for name in scalars.index)  # no gold trees in Markov chains


def test_grammar_records_tokens_pairs_and_probes(grammar):
    spec = load_spec(grammar.path / "spec.toml")
    scalars = grammar.scalars()
    names = set(scalars.name)
    assert {"test/loss", "pairs/acc", "pairs/none/acc", "pairs/pp/acc", "pairs/rc/acc", "pairs/center/acc",
            "kl/unigram", "kl/bigram", "kl/trigram", "uas/best", "uas/L0H0", "uas/L0H1", "uas/offset",
            "uas_undirected/best", "uas_undirected/L0H0"} <= names
    task, model = rebuild(grammar, 12)
    pairs = task.eval_splits()[1]
    rows = grammar.examples().query("step == 12 and split == 'pairs'")
    assert len(rows) == 2 * 5 * 4  # members x pairs per construction x constructions
    with torch.no_grad():
        if spec.task.objective == "causal":  # the summed log-probabilities of the two sentences, directly
            def logprob(x, y):
                lp = model(x).log_softmax(-1)  # [M, P, T, V]
                picked = lp.gather(-1, y.clamp_min(0)[None, ..., None].expand(2, -1, -1, 1))[..., 0]
                return (picked * (y != IGNORE)).sum(-1)
            margin = logprob(pairs.x, pairs.y) - logprob(pairs.bad, pairs.bad_y)
        else:  # the two verb forms' logits at the masked verb
            assert (pairs.x[torch.arange(len(pairs.site)), pairs.site] == MASK).all()
            logits = model(pairs.x)[:, torch.arange(len(pairs.site)), pairs.site]
            margin = logits[..., pairs.good_token].diagonal(dim1=1, dim2=2) - \
                logits[..., pairs.bad_token].diagonal(dim1=1, dim2=2)
    member0 = rows[rows.member == 0].sort_values("example")
    assert (member0.correct.values == (margin[0] > 0).numpy()).all()
    final = scalars.query("step == 12 and member == 0").set_index("name").value
    assert final["pairs/acc"] == pytest.approx(float((margin[0] > 0).float().mean()))
    # tokens: every held-out example is a scored token of a sentence, with its text
    tokens = grammar.table("tokens")
    assert tokens.split.eq("test").all() and (tokens.token != PAD).all()
    words = spec.task.grammar().words()
    assert (tokens.text == [words[t] for t in tokens.token]).all()


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_uas_on_attention_set_by_hand(objective):
    """Attention set by hand from the generator's own trees (not the task's): every word looks at its gold head (the
    root at its first dependent): UAS 1 for the masked LM, which sees both sides; every word looks at the word
    before it: the share computed directly from the trees, for both (a causal input is shifted by <bos>)."""
    spec = GrammarSpec(objective=objective, n_train=50, n_test=30, n_probe=30)
    task = make_task([spec], [0], 10_000)
    test = sample(spec.grammar(), 30, stream_seed("grammar-test", 0))  # the task's held-out sentences
    shift = 1 if objective == "causal" else 0
    positions = task.n_positions
    gold, previous = torch.zeros(30, positions, positions), torch.zeros(30, positions, positions)
    hits = total = 0
    for s in range(30):
        heads, n_words = test.heads[s], min(int(test.lengths[s]), positions - shift)  # after <bos>, what fits
        for i in range(n_words):
            target = heads[i] if heads[i] >= 0 else next(j for j in range(n_words) if heads[j] == i)
            gold[s, i + shift, target + shift] = 1.0
            previous[s, i + shift, max(i - 1, 0) + shift] = 1.0
            hits += int(i > 0 and (heads[i] == i - 1 or heads[i - 1] == i))
            total += 1
    measured = task.measures(FakeModel(task, [gold, previous]))
    if objective == "masked":
        assert measured["uas_undirected/L0H0"].item() == 1.0
        assert measured["uas/L0H0"].item() == pytest.approx(1 - 30 / total)  # directed: every word but the roots
    assert measured["uas_undirected/L0H1"].item() == pytest.approx(hits / total)
    trees = [list(enumerate(test.heads[s, : test.lengths[s]])) for s in range(30)]
    left, right = (sum(int(h == i + k) for tree in trees for i, h in tree) for k in (-1, 1))
    # directed, the previous-word head reads as offset -1 (dep->head) and as offset +1 (head<-dep): the better
    assert measured["uas/L0H1"].item() == pytest.approx(max(left, right) / total)
    if objective == "causal":  # the recorded baseline is exactly the previous-token head
        assert measured["uas_undirected/adjacent"].item() == pytest.approx(hits / total)
    else:  # the better of previous and next token
        assert measured["uas_undirected/adjacent"].item() >= hits / total - 1e-6
    assert measured["uas_undirected/best"].item() == max(measured["uas_undirected/L0H0"].item(),
                                                         measured["uas_undirected/L0H1"].item())
    assert measured["uas/offset"].item() >= max(left, right) / total - 1e-6


class FakeModel(torch.nn.Module):
    """Uniform predictions and attention patterns given by hand (one layer, one head per pattern)."""

    def __init__(self, task, patterns):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.n_outputs, self.patterns = task.n_outputs, torch.stack(patterns, 1)[None]  # [1, S, H, T, T]

    def forward(self, x):
        return torch.zeros(1, *x.shape, self.n_outputs)

    def forward_with_patterns(self, x):
        return self(x), [self.patterns]

    def attention_patterns(self, x):
        return [self.patterns]


def test_bert_masking_rates():
    from ontogeny.tasks.grammar import bert_mask
    words = torch.randint(3, 50, (2000, 12))
    words[:, 9:] = PAD
    x, y = bert_mask(words, 0.15, 50, torch.Generator().manual_seed(0))
    chosen = y != IGNORE
    assert not chosen[:, 9:].any() and (x[:, 9:] == PAD).all()
    assert chosen.float()[:, :9].mean().item() == pytest.approx(0.15, abs=0.01)
    assert (y[chosen] == words[chosen]).all()
    masked, kept = (x == MASK) & chosen, (x == words) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.02)
    assert kept.sum() / chosen.sum() == pytest.approx(0.1 + 0.1 / 47, abs=0.02)  # kept, or replaced by itself
    assert (x[~chosen] == words[~chosen]).all()


def test_causal_inputs_start_with_bos():
    from ontogeny.tasks.grammar import causal_io
    words = torch.tensor([[5, 6, 7, PAD]])
    x, y = causal_io(words)
    assert x.tolist() == [[BOS, 5, 6, 7]] and y.tolist() == [[5, 6, 7, IGNORE]]


def test_members_with_their_own_data_seed_get_their_own_batches():
    spec = GrammarSpec(n_train=200, n_test=10, n_probe=5)
    shared, split = make_task([spec] * 2, [3, 3], 1000), make_task([spec] * 2, [3, 4], 1000)
    assert shared.batch(0).x.dim() == 2 and split.batch(0).x.dim() == 3
    assert torch.equal(split.batch(5).x[0], shared.batch(5).x)  # member 0's data does not depend on member 1's
    assert torch.equal(split.batch(5).x[0], split.batch(5).x[0]) and not torch.equal(*split.batch(5).x)
    assert torch.equal(shared.batch(5).member(1).x, shared.batch(5).x)  # a shared [B, T] batch is every member's
    assert torch.equal(split.batch(5).member(1).y, split.batch(5).y[1])


def test_a_killed_language_run_resumes_to_the_uninterrupted_rows(tmp_path):
    overrides = [*GRAMMAR, "steps=60", "record.every=5"]
    want = og.run("syntax-drops", overrides=overrides, out=tmp_path / "ref")
    out = tmp_path / "run"
    args = [a for s in overrides for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "ontogeny.cli", "run", "syntax-drops", *args, "--out", str(out),
                             "--commit-seconds", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "writers" / "ensemble-0000" / "commits.jsonl"
    deadline = time.monotonic() + 120
    while not log.exists() or log.read_text().count("\n") < 4:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 0 < og.open(out).scalars().step.max() < 60
    done = subprocess.run([sys.executable, "-m", "ontogeny.cli", "run", "--resume", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = og.open(out)
    for table in ("scalars", "examples"):
        keys = ["member", "step", "name"] if table == "scalars" else ["member", "step", "split", "example"]
        a = getattr(got, table)().sort_values(keys).reset_index(drop=True)
        b = getattr(want, table)().sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, obj=table)


@pytest.mark.parametrize("recipe, override, words", [
    ("syntax-drops", "task.pp_share=1.5", "task.pp_share"),
    ("syntax-drops", "task.center_depth=7", "task.center_depth"),
    ("syntax-drops", "task.objective=seq2seq", "task.objective"),
    ("syntax-drops", "task.n_classes=4", r"task\.n_verbs.*multiple of n_classes\^2 = 16"),
    ("icl-markov", "task.k=1", "task.k"),
    ("icl-markov", "model.n_ctx=10", "model.n_ctx"),
    ("icl-markov", "model.name=mlp", "language task"),
])
def test_bad_language_input_is_one_line(tmp_path, recipe, override, words):
    with pytest.raises(SpecError, match=words) as info:
        og.run(recipe, overrides=[override], out=tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()
