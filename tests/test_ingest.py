"""`ontogeny ingest` on a checkpoint suite built here: a tiny GPT-NeoX (the Pythia architecture) trained a little
and saved at log-spaced steps, with a tokenizer made by `tokenizers` (the hub is not reachable from tests)."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import ontogeny as og
from ontogeny.exceptions import IngestError
from ontogeny.analysis import analyze
from ontogeny.cli import app

pytest.importorskip("transformers", reason="the hf extra: pip install 'ontogeny[hf]'")

STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
NOUNS, VERBS = ["cat", "dog", "bird", "fish"], ["sees", "likes", "chases"]


def sentences(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " . ".join(f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}" for _ in range(n))


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator([sentences(200, 0)], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")


def build_suite(root, seed: int):
    """Train a tiny GPT-NeoX for 64 steps on the grammar's sentences, saving it at STEPS as step<N>/ folders."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = tokenizer()
    tok.save_pretrained(root)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    ids = torch.tensor(tok(sentences(400, seed + 1))["input_ids"])
    data = ids[: len(ids) // 16 * 16].reshape(-1, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(STEPS[-1] + 1):
        if step in STEPS:
            model.save_pretrained(root / f"step{step}")
        batch = data[torch.randint(0, len(data), (16,), generator=torch.Generator().manual_seed(step))]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return root


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    root = tmp_path_factory.mktemp("suites")
    probe = root / "probe.txt"
    probe.write_text(sentences(60, 99))
    return build_suite(root / "tiny-seed0", 0), build_suite(root / "tiny-seed1", 1), probe


@pytest.fixture(scope="module")
def ingested(suites, tmp_path_factory):
    seed0, seed1, probe = suites
    out = tmp_path_factory.mktemp("ingested") / "run"
    done = CliRunner().invoke(app, ["ingest", str(seed0), "--members", str(seed1), "--probe", str(probe),
                                    "--out", str(out), "--context", "16"])
    assert done.exit_code == 0, done.output
    return og.open(out)


def test_every_token_of_every_checkpoint_is_scored_like_the_model_itself(ingested, suites):
    from transformers import AutoModelForCausalLM

    run, (seed0, _, probe) = ingested, suites
    assert run.producer["kind"] == "suite" and run.members().source.tolist() == [str(s) for s in suites[:2]]
    assert run.members().init_seed.tolist() == [0, 1] and set(run.members().status) == {"ok"}
    assert run.members().chance_loss.tolist() == pytest.approx([np.log(len(tokenizer()))] * 2)  # ln V per token
    tokens = run.tokens()
    n_tokens = len(tokens)
    assert len(run.examples()) == 2 * len(STEPS) * n_tokens
    assert sorted(set(run.examples().step)) == list(STEPS)
    # the reference: the checkpoint loaded by transformers, scored by hand
    sequences = torch.tensor(tokenizer()(probe.read_text())["input_ids"])
    sequences = sequences[: len(sequences) // 16 * 16].reshape(-1, 16)
    model = AutoModelForCausalLM.from_pretrained(seed0 / "step8").eval()
    with torch.no_grad():
        logits = model(sequences).logits[:, :-1]
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), sequences[:, 1:].reshape(-1),
                                             reduction="none")
    got = run.examples(member=0, step=8)
    np.testing.assert_allclose(got.loss, want.numpy(), rtol=1e-5, atol=1e-6)
    assert got.correct.tolist() == (logits.argmax(-1) == sequences[:, 1:]).reshape(-1).tolist()
    assert tokens.text.iloc[0] == tokenizer().convert_ids_to_tokens(int(sequences[0, 1]))
    assert set(run.subsets().subset) == {"frequent", "medium", "rare"}
    assert set(tokens.frequency) == {"frequent", "medium", "rare"}
    loss = run.scalars(member=0, name="probe/loss").value.to_numpy()
    assert loss[-1] < loss[0] / 2  # it learned the grammar


def test_analyze_and_report_a_suite(ingested, tmp_path):
    from ontogeny.report import write_report

    result = analyze(ingested)
    dynamics = result.tables["example_dynamics"]
    assert len(dynamics) == 2 * len(ingested.tokens()) and dynamics.aoa_step.notna().mean() > 0.5
    assert set(result.tables["hidden_transitions"].level) == {"subset"}  # per frequency bucket
    stats = result.tables["seed_stats"]
    assert "final probe/loss" in set(stats.quantity) and set(stats.config) == {"all"}  # Multi-Bootstrap over seeds
    assert any("all distinct weights" in line for line in result.summary)
    page = write_report(ingested.path, tmp_path / "report.html").read_text()
    assert "suite" in page and 'id="curves"' in page and 'id="hidden"' in page


def test_ingest_resumes_and_adds_revisions_incrementally(suites, ingested, tmp_path):
    seed0, seed1, probe = suites
    out = tmp_path / "run"
    og.ingest(str(seed0), probe, out=out, members=[str(seed1)], context=16, revisions=["step0", "step4", "step64"])
    assert sorted(set(og.open(out).examples().step)) == [0, 4, 64]
    og.ingest(str(seed0), probe, out=out, members=[str(seed1)], context=16)  # the rest, and nothing twice
    for table in ("scalars", "examples"):
        got = getattr(og.open(out), table)()
        pd.testing.assert_frame_equal(got, getattr(ingested, table)(), obj=table)


def test_duplicated_and_reconfigured_revisions_are_flagged(suites, tmp_path):
    seed0, _, probe = suites
    suite = tmp_path / "suite"
    shutil.copytree(seed0, suite)
    shutil.rmtree(suite / "step16")
    shutil.copytree(suite / "step8", suite / "step16")  # a mislabelled checkpoint: step 16 holds step 8's weights
    config = suite / "step32" / "config.json"
    config.write_text(config.read_text().replace('"layer_norm_eps": 1e-05', '"layer_norm_eps": 1e-06'))
    from transformers import AutoModelForCausalLM

    damaged = AutoModelForCausalLM.from_pretrained(suite / "step4")  # weights that load but score as garbage
    with torch.no_grad():
        damaged.get_output_embeddings().weight.mul_(1000)
    damaged.save_pretrained(suite / "step4")
    og.ingest(str(suite), probe, out=tmp_path / "run", context=16)
    result = analyze(og.open(tmp_path / "run"), what=["suite"])
    assert "member 0 step16: weights equal step 8's (mislabelled or duplicated?)" in result.summary
    assert "member 0 step32: model config differs from the member's first revision" in result.summary
    jumped = [line for line in result.summary if "x its neighbours'" in line]
    assert len(jumped) == 1 and jumped[0].startswith("member 0 step4: probe loss")  # and no healthy revision


def test_bad_input_is_one_line_and_writes_nothing(suites, tmp_path):
    seed0, _, probe = suites
    broken = tmp_path / "broken"
    shutil.copytree(seed0, broken)
    weights = broken / "step4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    fewer_layers = tmp_path / "fewer-layers"  # its config says 3 layers, its weights hold 2
    shutil.copytree(seed0, fewer_layers)
    config = fewer_layers / "step4" / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.arange(10))
    out_of_vocabulary, negative, empty = (tmp_path / f"{name}.npy" for name in ("oov", "negative", "empty"))
    np.save(out_of_vocabulary, np.full((2, 8), 10_000))
    np.save(negative, -np.ones((2, 8), dtype=np.int64))
    np.save(empty, np.zeros((0, 8), dtype=np.int64))
    cases = [
        (["ingest", str(seed0), "--probe", str(probe), "--revisions", "step999", "--out"], "no revision step999"),
        (["ingest", str(broken), "--probe", str(probe), "--revisions", "step4", "--out"], "does not load"),
        (["ingest", str(seed0), "--probe", str(tmp_path / "none.txt"), "--out"], "no such probe file"),
        (["ingest", str(seed0), "--probe", str(tokens), "--out"], "shape [sequences, positions >= 2]"),
        (["ingest", "not/a-model/id", "--probe", str(probe), "--out"], "neither a directory"),
        (["ingest", str(seed0), "--members", str(seed0), "--probe", str(probe), "--out"], "given twice as a member"),
        (["ingest", str(seed0), "--probe", str(probe), "--context", "65", "--out"],
         "--context 65: the probe's sequences are longer than the model's 64 positions"),
        (["ingest", str(fewer_layers), "--probe", str(probe), "--revisions", "step4", "--out"],
         "the weights do not match the model's config"),
        (["ingest", str(seed0), "--probe", str(out_of_vocabulary), "--out"], "token id 10000 is outside the model's"),
        (["ingest", str(seed0), "--probe", str(negative), "--out"], "token id -1 is outside the model's vocabulary"),
        (["ingest", str(seed0), "--probe", str(empty), "--out"], "shape [sequences, positions >= 2] (got (0, 8)"),
        (["ingest", str(seed0), "--probe", str(probe), "--batch-size", "0", "--out"], "--batch-size 0: must be"),
    ]
    for index, (args, words) in enumerate(cases):
        out = tmp_path / f"out{index}"
        done = CliRunner().invoke(app, [*args, str(out)])
        assert done.exit_code == 2 and done.stderr.count("\n") == 1 and words in done.stderr, (args, done.output)
        assert not out.exists()


def _state_dict_suite(seed0, tmp_path, monkeypatch, save, suffix):
    """The suite's steps 0 and 64 as state dicts (`save(weights, path)`), a `tiny_builder:build` module that makes
    the model, and a token-id probe: (states directory, probe path)."""
    from transformers import AutoModelForCausalLM

    states = tmp_path / "states"
    states.mkdir()
    for step in (0, 64):
        save(AutoModelForCausalLM.from_pretrained(seed0 / f"step{step}").state_dict(), states / f"step{step}{suffix}")
    (tmp_path / "tiny_builder.py").write_text(
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        f"def build():\n    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained({str(seed0 / 'step0')!r}))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    probe = tmp_path / "probe.npy"
    np.save(probe, np.random.default_rng(0).integers(0, 10, size=(3, 12)))
    return states, probe


def test_token_id_probes_and_state_dict_suites(suites, tmp_path, monkeypatch):
    states, probe = _state_dict_suite(suites[0], tmp_path, monkeypatch, torch.save, ".pt")
    run = og.ingest(str(states), probe, out=tmp_path / "run", build="tiny_builder:build")
    assert sorted(set(run.examples().step)) == [0, 64] and len(run.examples(step=0)) == 3 * 11


class Killed(Exception):
    """Stands for a kill: the writer keeps exactly what it committed (see test_store's crash tests)."""


@pytest.mark.parametrize("after", [3, len(STEPS)])  # mid-member, and after the last revision but before "ok"
def test_a_killed_ingest_run_again_equals_an_uninterrupted_one(suites, ingested, tmp_path, after):
    seed0, seed1, probe = suites
    out, scored = tmp_path / "run", []

    def kill(member, step, done, total, speed):
        scored.append(step)
        if len(scored) == after:
            raise Killed

    with pytest.raises(Killed):
        og.ingest(str(seed0), probe, out=out, members=[str(seed1)], context=16, progress=kill)
    og.ingest(str(seed0), probe, out=out, members=[str(seed1)], context=16)
    run = og.open(out)
    pd.testing.assert_frame_equal(run.members(), ingested.members())  # chance_loss included, as a float column
    pd.testing.assert_frame_equal(run.examples(), ingested.examples())
    aoa = [analyze(r, what=["examples"]).tables["example_dynamics"].aoa_step.median() for r in (run, ingested)]
    assert aoa[0] == aoa[1]


@pytest.mark.parametrize("damage", ["truncated", "garbled header"])
def test_a_damaged_checkpoint_mid_suite_is_refused_before_anything_is_written(suites, tmp_path, damage):
    seed0, _, probe = suites
    suite = tmp_path / "suite"
    shutil.copytree(seed0, suite)
    weights = suite / "step16" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:8] + b"\xff" * 64 + data[72:])
    out = tmp_path / "run"
    done = CliRunner().invoke(app, ["ingest", str(suite), "--probe", str(probe), "--out", str(out), "--context", "16"])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.output
    assert "step16/model.safetensors: the checkpoint does not load" in done.stderr
    assert "nothing was ingested" in done.stderr
    assert not out.exists()


def test_a_checkpoint_that_fails_only_when_loaded_keeps_the_revisions_before_it_and_says_how_to_go_on(
        suites, tmp_path, monkeypatch):
    from ontogeny.suites.sources import DirectorySource

    seed0, _, probe = suites
    load = DirectorySource.load

    def flaky(self, revision):
        if revision == "step16":
            raise IngestError(f"{self.path / revision}: the checkpoint does not load (remote file went away)")
        return load(self, revision)

    monkeypatch.setattr(DirectorySource, "load", flaky)
    with pytest.raises(IngestError, match="the 5 revisions of member 0 before it are kept.*run the same command again"):
        og.ingest(str(seed0), probe, out=tmp_path / "run", context=16)
    assert sorted(set(og.open(tmp_path / "run").examples().step)) == [0, 1, 2, 4, 8]
    monkeypatch.setattr(DirectorySource, "load", load)
    run = og.ingest(str(seed0), probe, out=tmp_path / "run", context=16)
    assert sorted(set(run.examples().step)) == list(STEPS) and run.members().status.tolist() == ["ok"]


def test_a_full_disk_is_one_line_and_the_same_command_goes_on(suites, ingested, tmp_path, monkeypatch, fill_disk):
    from ontogeny.exceptions import StoreError

    seed0, seed1, probe = suites
    fill_disk(after=12)
    with pytest.raises(StoreError, match="no space left on device; free some space, then run the same command "
                                         "again to go on") as error:
        og.ingest(str(seed0), probe, out=tmp_path / "run", members=[str(seed1)], context=16)
    assert "\n" not in str(error.value)
    monkeypatch.undo()
    run = og.ingest(str(seed0), probe, out=tmp_path / "run", members=[str(seed1)], context=16)
    pd.testing.assert_frame_equal(run.examples(), ingested.examples())
    pd.testing.assert_frame_equal(run.members(), ingested.members())


LENS_BUILDER = """
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

def build():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TransformerLens 3 points to its TransformerBridge
        return HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=12, d_head=4, n_heads=4,
                                                         d_mlp=32, d_vocab=20, act_fn="relu", device="cpu"))

class Tupled(HookedTransformer):
    def forward(self, tokens):  # (logits, cache): not logits or an output object with .logits
        return super().forward(tokens), None

def tupled():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Tupled(build().cfg)
"""


def test_transformer_lens_checkpoints_are_ingested_with_their_own_losses(tmp_path, monkeypatch):
    (tmp_path / "lens_builder.py").write_text(LENS_BUILDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import lens_builder

    states, expected = tmp_path / "states", {}
    states.mkdir()
    tokens = torch.as_tensor(np.random.default_rng(0).integers(0, 20, size=(4, 12)))
    for step in (0, 50):
        torch.manual_seed(step)
        model = lens_builder.build()
        torch.save(model.state_dict(), states / f"step{step}.pt")  # holds a 0-dim buffer (attn.IGNORE)
        with torch.no_grad():
            expected[step] = model(tokens, return_type="loss").item()
    np.save(tmp_path / "probe.npy", tokens.numpy())
    run = og.ingest(str(states), tmp_path / "probe.npy", out=tmp_path / "run", build="lens_builder:build")
    losses = run.scalars(name="probe/loss").set_index("step").value
    assert losses[0] == pytest.approx(expected[0], rel=1e-5) and losses[50] == pytest.approx(expected[50], rel=1e-5)
    assert run.members().chance_loss[0] == pytest.approx(np.log(20))  # its d_vocab_out
    assert run.revisions().weights_sha256.nunique() == 2 and run.revisions().config_sha256.nunique() == 1
    with pytest.raises(IngestError, match="the first checkpoint cannot score it .*nothing was ingested"):
        og.ingest(str(states), tmp_path / "probe.npy", out=tmp_path / "bad", build="lens_builder:tupled")
    assert not (tmp_path / "bad").exists()  # no half-made run


def test_transformer_lens_checkpoint_lists_are_read_by_name():
    from ontogeny.suites.sources import open_source

    source = open_source("tl:stanford-gpt2-small-a")  # TransformerLens's list, read without the hub
    assert source.revisions()[:3] == ["step0", "step10", "step20"] and len(source.revisions()) == 609
    for name, reason in (("tl:gpt2", "not checkpointed"), ("tl:no-such-model", "not found")):
        with pytest.raises(IngestError, match=f"{name}: TransformerLens lists no checkpoints for it .*{reason}"):
            open_source(name)


def test_a_suite_that_ships_sha256sums_is_checked_against_them_before_anything_is_scored(suites, tmp_path,
                                                                                          monkeypatch):
    import hashlib

    from safetensors.torch import save_file

    def save(weights, path):
        save_file({k: v.contiguous() for k, v in weights.items()}, path)

    states, probe = _state_dict_suite(suites[0], tmp_path, monkeypatch, save, ".safetensors")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(states.iterdir()))
    (states / "SHA256SUMS").write_text(sums)
    data = bytearray((states / "step64.safetensors").read_bytes())
    data[-100] ^= 0x10  # one bit inside the last tensor: it still loads, and would score as other weights
    (states / "step64.safetensors").write_bytes(bytes(data))
    with pytest.raises(IngestError, match=r"step64.safetensors: its sha256 is not the one the suite's SHA256SUMS"):
        og.ingest(str(states), probe, out=tmp_path / "run", build="tiny_builder:build")
    assert not (tmp_path / "run").exists()
    (states / "SHA256SUMS").write_text("not a hash  step0.safetensors\n")
    with pytest.raises(IngestError, match=r"SHA256SUMS:1: not '<sha256> <path>'"):
        og.ingest(str(states), probe, out=tmp_path / "run", build="tiny_builder:build")
    data[-100] ^= 0x10
    (states / "step64.safetensors").write_bytes(bytes(data))
    (states / "SHA256SUMS").write_text(sums)
    run = og.ingest(str(states), probe, out=tmp_path / "run", build="tiny_builder:build")
    assert sorted(set(run.examples().step)) == [0, 64]


def test_ingest_lines_say_how_many_revisions_of_how_many_and_how_long_is_left(suites, tmp_path):
    seed0, _, probe = suites
    done = CliRunner().invoke(app, ["ingest", str(seed0), "--probe", str(probe), "--out", str(tmp_path / "run"),
                                    "--context", "16", "--revisions", "step0,step1,step2"])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if " step " in line and "revisions" in line]
    assert [line.split(": ")[1].split(",")[0] for line in lines] == ["1/3 revisions", "2/3 revisions", "3/3 revisions"]
    assert "s left for it" in lines[1] and "left" not in lines[2]
