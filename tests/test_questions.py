"""The question-formation task: targets only on the output, shared and per-member batches, each member's own test
set, the per-sequence adapter against a direct computation, the rule score on predictions set by hand, bad input,
and one tiny run end to end."""

import numpy as np
import pytest
import torch

import ontogeny as og
from ontogeny.exceptions import SpecError
from ontogeny.models import make_model
from ontogeny.models.transformer import TransformerSpec
from ontogeny.evaluation.evaluate import Evaluator
from ontogeny.spec import load_spec
from ontogeny.tasks import IGNORE, make_task
from ontogeny.tasks.questions import QuestionFormationSpec
from ontogeny.train.checkpoint_rows import sequence_adapter, sequence_probe
from ontogeny.tasks.questions_gen import BOS, DECL, EOS, PAD, QUEST, sample
from ontogeny.members import ensembles, expand

SMALL = {"n_train": 300, "n_test": 24, "n_gen": 20, "batch_size": 16}
PLAIN = QuestionFormationSpec(**SMALL)
CENTER = QuestionFormationSpec(**SMALL, complexity=0.8)
TINY_MODEL = TransformerSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32, layer_norm=True)


def test_targets_are_the_output_and_its_eos_only():
    task = make_task([PLAIN], [0], 10_000)
    batch = task.batch(3)
    assert batch.x.shape == batch.y.shape == (16, task.n_positions) and task.n_positions == 46
    assert batch.weight.shape == (1, 16 * 46)
    assert torch.equal(batch.weight[0], (batch.y != IGNORE).flatten().float())
    for x, y in zip(batch.x, batch.y):
        assert x[0] == BOS
        marker = int(torch.nonzero((x == DECL) | (x == QUEST))[0])
        end = int(torch.nonzero(y == EOS)[0])
        scored = torch.nonzero(y != IGNORE).flatten()
        assert scored.tolist() == list(range(marker, end + 1))  # from the marker's target to <eos>, nothing else
        assert torch.equal(y[marker:end], x[marker + 1:end + 1])  # each target is the next input
        assert (x[end + 2:] == PAD).all()  # x holds <eos> at end + 1 (if it fits), then padding
        declarative = x[1:marker]
        output = y[marker:end]
        if x[marker] == DECL:
            assert torch.equal(output, declarative)
        else:  # an auxiliary fronted, the rest in order, "?" for "."
            assert len(output) == len(declarative) and output[0] in declarative


def test_a_subject_rc_sweep_is_one_ensemble_with_each_member_on_its_own_corpus():
    spec = load_spec("hierarchy-data-quick", ["sweep.task.complexity=[0.0]", "sweep.task.subject_rc=[0.0, 1.0]",
                                              "task.n_train=400", "task.n_test=40", "task.n_gen=20"])
    (group,) = ensembles(expand(spec))
    task = make_task([m.spec.task for m in group], [m.data_seed for m in group], spec.record.max_probe_examples)
    x = task.batch(0).x  # [M, B, T]
    assert sorted(m.spec.task.subject_rc for m in group) == [0.0, 0.0, 1.0, 1.0]
    for i, member in enumerate(group):  # each member's batch is its own config's corpus
        alone = make_task([member.spec.task], [member.data_seed], spec.record.max_probe_examples)
        assert torch.equal(x[i], alone.batch(0).x)
    first = [m.spec.task.subject_rc for m in group].index(1.0)
    assert not torch.equal(x[0], x[first])


def test_loss_on_all_scores_every_token_after_bos_in_training_only(tmp_path):
    output_only = make_task([PLAIN], [0], 10_000)
    task = make_task([QuestionFormationSpec(**SMALL, loss_on="all")], [0], 10_000)
    batch, narrow = task.batch(3), output_only.batch(3)
    assert torch.equal(batch.x, narrow.x)
    for x, y in zip(batch.x, batch.y):
        end = int(torch.nonzero(y == EOS)[0])
        assert torch.nonzero(y != IGNORE).flatten().tolist() == list(range(0, end + 1))  # every target to <eos>
        assert torch.equal(y[: end], x[1: end + 1])
    assert ((narrow.y != IGNORE) <= (batch.y != IGNORE)).all()
    for ours, theirs in zip(task.eval_splits(), output_only.eval_splits()):  # evaluation: the outputs alone
        assert torch.equal(ours.y, theirs.y)
    with pytest.raises(SpecError, match="task.loss_on"):
        og.run("hierarchy-data-quick", overrides=["task.loss_on=everything"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_members_share_a_batch_only_with_one_config_and_one_data_seed():
    shared = make_task([PLAIN, PLAIN], [0, 0], 10_000).batch(5)
    assert shared.x.dim() == 2 and shared.weight.shape == (1, 16 * 46)
    alone_plain, alone_center = make_task([PLAIN], [0], 10_000), make_task([CENTER], [0], 10_000)
    assert torch.equal(shared.x, alone_plain.batch(5).x)
    mixed = make_task([PLAIN, CENTER], [0, 0], 10_000).batch(5)
    assert mixed.x.shape == mixed.y.shape == (2, 16, 46) and mixed.weight.shape == (2, 16 * 46)
    assert torch.equal(mixed.weight, (mixed.y != IGNORE).flatten(1).float())
    # each member's data is its own corpus, whatever the other members are
    assert torch.equal(mixed.x[0], alone_plain.batch(5).x) and torch.equal(mixed.x[1], alone_center.batch(5).x)
    assert not torch.equal(mixed.x[0], mixed.x[1])
    orders = make_task([PLAIN, PLAIN], [0, 1], 10_000).batch(5)
    assert orders.x.dim() == 3 and torch.equal(orders.x[1], make_task([PLAIN], [1], 10_000).batch(5).x)


def test_each_member_is_tested_on_its_own_distribution():
    task = make_task([PLAIN, CENTER, PLAIN], [0, 0, 1], 10_000)
    test, gen = task.eval_splits()
    assert (test.name, gen.name) == ("test", "gen") and test.x.shape == (48, 46)
    mask = test.member_mask
    assert mask.shape == (3, 48) and torch.equal(mask[0], mask[2]) and not (mask[0] & mask[1]).any()
    assert mask.sum(1).tolist() == [24, 24, 24]
    for row, spec in ((0, PLAIN), (1, CENTER)):
        own = sample(spec.grammar(), "test", 24, spec.split_seed)
        assert torch.equal(test.x[mask[row]], torch.from_numpy(own.tokens[:, :-1]))
        kind = np.asarray(own.kind, dtype=str)
        assert torch.equal(test.subsets["quest"][mask[row]], torch.from_numpy(kind == "quest"))
        assert torch.equal(test.subsets["decl"][mask[row]], torch.from_numpy(kind == "decl"))
        assert torch.equal(test.subsets["subject_rc"][mask[row]], torch.from_numpy(own.subject_rc))
    assert test.subsets["subject_rc"][mask[1]].any()  # complexity 0.8: center-embedded declaratives
    # an example id names one sentence in every ensemble of a run
    alone = make_task([CENTER], [0], 10_000).eval_splits()[0]
    assert len(set(test.example.tolist())) == 48 and torch.equal(alone.example, test.example[mask[1]])
    # gen is shared and does not depend on the member fields
    want = sample(PLAIN.grammar(), "gen", 20, 0)
    assert gen.member_mask is None and torch.equal(gen.x, torch.from_numpy(want.tokens[:, :-1]))
    assert torch.equal(gen.subsets["center_embedded"], torch.from_numpy(want.center_embedded))
    assert torch.equal(alone.x, test.x[mask[1]]) and torch.equal(make_task([CENTER], [0], 10_000).eval_splits()[1].x,
                                                                  gen.x)


def test_sequence_losses_match_a_direct_computation():
    task = make_task([PLAIN, CENTER], [0, 0], 10_000)
    model = make_model(TINY_MODEL, task, [1, 2]).eval()
    for split in task.eval_splits():
        probe = sequence_probe(split, torch.device("cpu"), rows=3 * task.n_positions)  # 3 sequences a batch
        loss, correct = Evaluator(None, [0, 1], [probe]).losses(model, probe)  # [M, S]
        assert loss.shape == correct.shape == (2, len(split.x))
        with torch.no_grad():
            for s in range(len(split.x)):
                logits = model(split.x[s:s + 1])[:, 0]  # [M, T, C], one sequence alone
                scored = split.y[s] != IGNORE
                for m in range(2):
                    want = torch.nn.functional.cross_entropy(logits[m, scored], split.y[s, scored])
                    assert loss[m, s].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
                    assert correct[m, s].item() == bool((logits[m, scored].argmax(-1) == split.y[s, scored]).all())


class Oracle(torch.nn.Module):
    """Predicts the split's own targets (looked up by input row), except at the <eos> of the sequences in `wrong`."""

    def __init__(self, split, n_outputs, wrong):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        targets = split.y.clamp_min(0).clone()
        for s in wrong:
            targets[s][split.y[s] == EOS] = PAD  # a scored token wrong: not an exact match
        self.lookup = {tuple(x.tolist()): t for x, t in zip(split.x, targets)}
        self.n_outputs = n_outputs

    def forward(self, x):
        targets = torch.stack([self.lookup[tuple(row.tolist())] for row in x])  # [S, T]
        return 20.0 * torch.nn.functional.one_hot(targets, self.n_outputs).float()[None]  # [1, S, T, C]


def test_a_sequence_is_correct_only_when_every_scored_token_is():
    task = make_task([PLAIN], [0], 10_000)
    gen = task.eval_splits()[1]
    loss, correct = sequence_adapter(Oracle(gen, task.n_outputs, wrong={2, 7}), (gen.x, gen.y))
    want = torch.ones(1, 20, dtype=torch.bool)
    want[0, [2, 7]] = False
    assert torch.equal(correct, want)
    n_scored = (gen.y != IGNORE).sum(-1)
    # the right tokens cost ~0; the one wrong token costs ~20 nats, shared over the sequence's scored tokens
    assert loss[0, 2].item() == pytest.approx(20.0 / n_scored[2].item(), rel=1e-3)
    assert loss[0, 0].item() < 1e-6


def _auxiliaries(words, auxiliaries, row):
    """(main, first) auxiliary token of a question's declarative, read from its words: an RC's auxiliary follows
    "that", the main one is the first auxiliary that does not."""
    marker = row.tolist().index(QUEST)
    at = [i for i in range(1, marker) if int(row[i]) in auxiliaries]
    main = next(i for i in at if words[row[i - 1]] != "that")
    return int(row[main]), int(row[at[0]])


class RuleModel(torch.nn.Module):
    """Four members predicting, at the marker, the main auxiliary, the first one, and "the" first with the main or
    the first auxiliary next; noise elsewhere."""

    def __init__(self, grammar):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.words, self.n_outputs = grammar.words(), grammar.vocab_size
        self.auxiliaries = set(range(grammar.first_auxiliary, grammar.first_preposition))

    def forward(self, x):
        logits = torch.randn(4, *x.shape, self.n_outputs)  # [M, S, T, C]
        the = self.words.index("the")
        for s, row in enumerate(x):
            marker = row.tolist().index(QUEST)
            main, first = _auxiliaries(self.words, self.auxiliaries, row)
            for m, tokens in enumerate(((main,), (first,), (the, main), (the, first))):
                for rank, token in enumerate(tokens):
                    logits[m, s, marker, token] = 100.0 - 50 * rank
        return logits


@pytest.mark.parametrize("agreement", [False, True])
def test_rule_score_on_predictions_set_by_hand(agreement):
    spec = QuestionFormationSpec(**{**SMALL, "n_gen": 300}, agreement=agreement)  # with it, half are plural forms
    task = make_task([spec], [0], 10_000)
    measured = task.measures(RuleModel(spec.grammar()))
    assert set(measured) == {f"{prefix}/{rule}" for prefix in ("rule", "rule_any", "rule_depth1", "rule_depth2")
                             for rule in ("hierarchical", "linear", "neither")}
    for depth in ("rule_depth1", "rule_depth2"):  # these members answer alike at both depths
        for rule in ("hierarchical", "linear", "neither"):
            assert measured[f"{depth}/{rule}"].tolist() == measured[f"rule/{rule}"].tolist()
    # Qin et al.'s: the most likely auxiliary, whatever non-auxiliary is more likely
    assert measured["rule/hierarchical"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert measured["rule/linear"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert measured["rule/neither"].tolist() == [0.0] * 4
    # the greedy token over the whole vocabulary: "the" is neither rule
    assert measured["rule_any/hierarchical"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert measured["rule_any/linear"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert measured["rule_any/neither"].tolist() == [0.0, 0.0, 1.0, 1.0]



class DepthModel(RuleModel):
    """One member fronting the main auxiliary where the subject has one relative clause, the first where it has two
    nested (two "that" before the main auxiliary)."""

    def forward(self, x):
        logits = torch.zeros(1, *x.shape, self.n_outputs)  # [M, S, T, C]
        for s, row in enumerate(x):
            marker = row.tolist().index(QUEST)
            main, first = _auxiliaries(self.words, self.auxiliaries, row)
            main_at = next(i for i in range(1, marker) if int(row[i]) == main and self.words[row[i - 1]] != "that")
            nested = sum(self.words[t] == "that" for t in row[1:main_at].tolist()) == 2
            logits[0, s, marker, first if nested else main] = 100.0
        return logits


def test_rule_score_by_depth_of_the_subject_relative_clause():
    spec = QuestionFormationSpec(**{**SMALL, "n_gen": 300})
    task = make_task([spec], [0], 10_000)
    measured = task.measures(DepthModel(spec.grammar()))
    one_clause = float(np.mean(~task.gen.center_embedded))
    assert 0.2 < one_clause < 0.8
    assert measured["rule_depth1/hierarchical"].tolist() == [1.0] and measured["rule_depth2/linear"].tolist() == [1.0]
    assert measured["rule/hierarchical"].item() == pytest.approx(one_clause)
    assert measured["rule/linear"].item() == pytest.approx(1 - one_clause)

@pytest.mark.parametrize("override, key", [
    ("task.complexity=1.5", "task.complexity"),
    ("sweep.task.complexity=[0.0, 1.5]", "task.complexity"),
    ("task.diversity=1", "task.diversity"),
    ("task.n_gen=0", "task.n_gen"),
])
def test_bad_input_is_one_line(tmp_path, override, key):
    with pytest.raises(SpecError, match=key) as info:
        og.run("hierarchy-data-quick", overrides=[override], out=tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and message.count("(got ") == 1
    assert not (tmp_path / "run").exists()


def test_a_tiny_run_records_the_rule_score_and_each_members_own_test_rows(tmp_path):
    overrides = ["steps=20", "seeds=1", "record.every=10", "record.weights_every=20", "task.n_train=200",
                 "task.n_test=12", "task.n_gen=10", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
                 "model.d_mlp=32", "sweep.task.complexity=[0.0, 0.8]"]
    run = og.run("hierarchy-data-quick", overrides=overrides, out=tmp_path / "run")
    scalars = run.scalars()
    assert {"rule/hierarchical", "rule/linear", "rule/neither", "gen/acc", "gen/loss", "gen/center_embedded/acc",
            "test/acc", "test/quest/loss", "test/decl/acc", "test/subject_rc/loss"} <= set(scalars.name)
    wide = scalars.pivot_table(index=["member", "step"], columns="name", values="value")
    np.testing.assert_allclose(wide[["rule/hierarchical", "rule/linear", "rule/neither"]].sum(axis=1), 1.0)
    # rebuild the members at step 20: their rows and rule score are the task's adapter and measures on them
    spec = load_spec(run.path / "spec.toml")
    (group,) = ensembles(expand(spec))  # the sweep's members train as one ensemble
    task = make_task([m.spec.task for m in group], [m.data_seed for m in group], spec.record.max_probe_examples)
    model = make_model(spec.model, task, [m.init_seed for m in group])
    from safetensors.torch import load_file
    weights = [load_file(run.path / p) for p in run.checkpoints().query("step == 20").sort_values("member").path]
    model.load_state_dict({name: torch.stack([w[name] for w in weights]) for name in weights[0]
                           if not name.startswith("preconditioner.")})
    test = task.eval_splits()[0]
    with torch.no_grad():
        loss, correct = sequence_adapter(model.eval(), (test.x, test.y))
    rows = run.examples(step=20, split="test")
    for m in range(2):
        own = rows[rows.member == m].sort_values("example")
        in_mask = test.member_mask[m]
        order = torch.argsort(test.example[in_mask])
        assert len(own) == 12 and (own.example.to_numpy() == test.example[in_mask][order].numpy()).all()
        np.testing.assert_allclose(own.loss, loss[m, in_mask][order].numpy(), rtol=1e-5, atol=1e-6)
        assert (own.correct.to_numpy() == correct[m, in_mask][order].numpy()).all()
    final = wide.xs(20, level="step")
    measured = task.measures(model)
    np.testing.assert_allclose(final["rule/hierarchical"], measured["rule/hierarchical"].numpy(), atol=1e-6)


# ---- tense reinflection (task.kind = "tense") -----------------------------------------------------------------------


class TenseRuleModel(torch.nn.Module):
    """Three members predicting, where the next output token is the main verb, its present form agreeing with the
    subject, with the most recent noun, and "the"; noise elsewhere. Read from the words alone: the main verb is the
    first verb not right after "that", the subject the first noun."""

    def __init__(self, grammar):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.grammar, self.words, self.n_outputs = grammar, grammar.words(), grammar.vocab_size

    def forward(self, x):
        g = self.grammar
        logits = torch.randn(3, *x.shape, self.n_outputs)  # [M, S, T, C]
        for s, row in enumerate(x.tolist()):
            marker = row.index(QUEST)  # the "present" marker (token id 4)
            declarative = row[1:marker]
            verbs = [i for i, t in enumerate(declarative) if g.first_verb <= t < g.first_auxiliary]
            main = next(i for i in verbs if self.words[declarative[i - 1]] != "that")
            lemma = declarative[main] - g.first_verb  # a past form: the first verb block
            linear = max(i for i in range(main) if g.first_noun <= declarative[i] < g.first_verb)
            number = [(declarative[at] - g.first_noun) // g.n_nouns for at in (1, linear)]  # 0 sg, 1 pl: subject, linear
            forms = [g.first_verb + (1 + k) * g.n_verbs + lemma for k in number]
            for m, token in enumerate((*forms, self.words.index("the"))):
                logits[m, s, marker + main, token] = 100.0  # x position marker + i predicts output word i
        return logits


def test_tense_rule_score_reads_the_main_verb():
    spec = QuestionFormationSpec(**{**SMALL, "n_gen": 300}, kind="tense")
    task = make_task([spec], [0], 10_000)
    assert set(task.eval_splits()[0].subsets) == {"present", "past", "subject_rc"}
    measured = task.measures(TenseRuleModel(spec.grammar()))
    assert measured["rule/hierarchical"].tolist() == [1.0, 0.0, 0.0]
    assert measured["rule/linear"].tolist() == [0.0, 1.0, 0.0]
    assert measured["rule/neither"].tolist() == [0.0, 0.0, 1.0]


def test_tense_bad_kind_is_one_line(tmp_path):
    with pytest.raises(SpecError, match="task.kind") as info:
        og.run("hierarchy-data-quick", overrides=["task.kind=bogus"], out=tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and message.count("(got ") == 1 and "question, tense" in message
    assert not (tmp_path / "run").exists()


def test_a_tiny_tense_run_records_the_rule_score(tmp_path):
    overrides = ["task.kind=tense", "model.d_model=16", "model.n_heads=2", "model.d_mlp=32", "steps=10",
                 "record.every=5", "seeds=1", "task.n_train=200", "task.n_test=20", "task.n_gen=20"]
    run = og.run("hierarchy-data-quick", overrides=overrides, out=tmp_path / "run")
    scalars = run.scalars()
    assert {"rule/hierarchical", "rule/linear", "rule/neither", "gen/acc", "test/present/acc",
            "test/past/loss", "gen/center_embedded/acc"} <= set(scalars.name)
    wide = scalars.pivot_table(index=["member", "step"], columns="name", values="value")
    np.testing.assert_allclose(wide[["rule/hierarchical", "rule/linear", "rule/neither"]].sum(axis=1), 1.0)
    assert load_spec(run.path / "spec.toml").task.kind == "tense"
