"""`ontogeny sae`: SAE seeds on every member of a run, the random-init control, agreement tables, one-line refusals."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import ontogeny as og
from ontogeny.report import write_report
from ontogeny.sae import agreement_summary, train_run_saes

SOURCE = ["task.p=23", "model.width=32", "steps=200", "seeds=2", "record.weights_every=200"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return og.run("grokking", overrides=SOURCE, out=tmp_path_factory.mktemp("sae") / "source")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ontogeny.cli", *args], capture_output=True, text=True, timeout=300)


def test_sae_run_holds_every_model_member_times_seed_at_each_checkpoint(source, tmp_path):
    done = _cli("sae", str(source.path), "--out", str(tmp_path / "sae"), "--seeds", "3", "--steps", "60",
                "--width", "64", "--k", "4")
    assert done.returncode == 0, done.stderr
    run = og.open(tmp_path / "sae")
    members = run.members()
    assert len(members) == 2 * 3 * 2  # 2 model members x 3 SAE seeds x (step 0 control, step 200)
    assert set(members.source_step) == {0, 200} and set(members.init_seed) == {0, 1, 2}
    assert (members.groupby(["source_member", "source_step"]).size() == 3).all()
    pairs = run.table("sae_agreement")
    assert len(pairs) == 2 * 2 * 3  # per model member and checkpoint, 3 pairs of seeds
    assert pairs.shared.between(0, 1).all() and pairs.mean_cosine.between(-1, 1).all()
    assert (pairs.shared_both <= pairs.shared + 1e-12).all()  # encoder and decoder: never more than decoder alone
    curve = run.table("sae_agreement_curve")
    assert (curve.sort_values("threshold").groupby(["source_member", "source_step"]).shared.apply(
        lambda s: bool((np.diff(s.to_numpy()) <= 1e-12).all()))).all()  # non-increasing in the threshold
    stability = run.table("sae_stability")
    assert (stability[stability.source_step == 200].shared_with_last == 1).all()  # each seed matches itself
    final = run.scalars(name=["sae/l0", "sae/fve", "sae/clean_loss"])
    assert (final[final.name == "sae/l0"].groupby("member").value.last() <= 4).all()
    # the clean loss is the model's own loss on the split the SAEs read (train): the source run recorded it
    recorded = source.scalars(name="train/loss", step=200).set_index("member").value
    clean = final[final.name == "sae/clean_loss"].merge(members[["member", "source_member", "source_step"]])
    for row in clean[clean.source_step == 200].itertuples():
        assert row.value == pytest.approx(recorded[row.source_member], rel=1e-5)
    assert done.stdout.count("of latents shared across 3 seeds") == 2
    flowed = " ".join(done.stdout.split())  # the console wraps long lines
    assert flowed.count("with encoder and decoder each matched above 0.7 (Paulo & Belrose's criterion)") == 2
    page = write_report(run.path).read_text()
    assert "SAE features across seeds" in page and "fig-sae-agreement" in page


def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, scalar_run):
    out = tmp_path / "never"
    foreign = scalar_run("foreign", pd.DataFrame({"member": [0, 0], "step": [0, 1], "name": "test/loss",
                                                  "value": [1.0, 0.5]}))
    cases = [(["--site", "resid"], "--site 'resid': no such site in this mlp (sites: hidden_in.0, hidden.0, hidden)"),
             (["--at", "100"], "--at 100: no saved weights at that step"),
             (["--kind", "gated"], "--kind 'gated': unknown"),
             (["--seeds", "1"], "--seeds 1: cross-seed agreement needs at least 2"),
             (["--l1", "-1", "--kind", "relu-l1"], "--l1 -1.0: must be >= 0"),
             (["--width", "0"], "--width 0: must be at least 1"),
             (["--out", str(source.path)], "which this command reads; choose another --out")]
    for args, message in cases:
        done = _cli("sae", str(source.path), "--out", str(out), "--steps", "5", *args)
        assert done.returncode == 2 and done.stderr.strip() == f"error: {message}" or message in done.stderr, args
        assert len(done.stderr.strip().splitlines()) == 1 and not out.exists(), args
    done = _cli("sae", str(foreign), "--out", str(out))
    assert done.returncode == 2 and "not `ontogeny run`" in done.stderr and not out.exists()


def test_an_out_that_is_or_is_inside_the_source_run_is_refused_and_the_source_kept(source):
    before = {p: p.stat().st_mtime_ns for p in source.path.rglob("*")}
    for out, where in ((source.path, "is"), (source.path / "sub", "inside"), (source.path.parent, "holds")):
        done = _cli("sae", str(source.path), "--out", str(out), "--overwrite", "--steps", "5")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"{out}: {where} {source.path.resolve()}, which this command reads" in done.stderr
    assert {p: p.stat().st_mtime_ns for p in source.path.rglob("*")} == before
    assert og.open(source.path).producer["kind"] == "ontogeny"


def test_summary_counts_planted_agreement(source, tmp_path):
    run = train_run_saes(source, tmp_path / "s", seeds=2, steps=20, width=16, k=2, control=False)
    lines = agreement_summary(run)
    table = run.table("sae_agreement")
    expected = table.groupby("source_member").shared.mean().mean()
    assert lines[0].startswith(f"sae [step 200, trained]: {expected:.0%} [")


def test_transcoders_on_a_transformer_across_checkpoints(tmp_path):
    source = og.run("grokking-nanda", overrides=["task.p=11", "model.d_model=16", "model.d_mlp=32", "steps=40",
                                                 "seeds=2", "record.every=20", "record.weights_every=20"],
                    out=tmp_path / "nanda")
    run = train_run_saes(source, tmp_path / "tc", at=[20, 40], site="mlp.0", kind="transcoder", seeds=2, steps=30,
                         width=32, k=4)
    members = run.members()
    assert set(members.source_step) == {0, 20, 40} and set(members.kind) == {"transcoder"}
    stability = run.table("sae_stability")
    assert set(stability.source_step) == {0, 20, 40}
    assert (stability[stability.source_step == 40].shared_with_last == 1).all()
    recovered = run.scalars(name="sae/loss_recovered")
    assert np.isfinite(recovered.value).all()
    assert any("reappear in the same seed's SAE at step 40" in line for line in agreement_summary(run))


def test_transcoders_on_an_mlp_map_the_layers_input_to_its_output(source, tmp_path):
    run = train_run_saes(source, tmp_path / "tc", kind="transcoder", seeds=2, steps=200, width=64, k=8,
                         control=False)
    final = run.scalars(step=200).pivot(index="member", columns="name", values="value")
    assert (final["sae/fve"] > 0.2).all()  # it predicts the hidden layer from the one-hot tokens (measured: 0.38)
    # spliced in, it is scored against the clean model and against the layer's output zeroed
    assert (final["sae/downstream_loss"] < final["sae/zero_loss"]).all()
    assert final["sae/loss_recovered"].between(0, 1.5).all()


@pytest.mark.parametrize("kind", ["topk", "relu-l1"])
def test_an_sae_goes_to_sae_lens_and_computes_the_same_latents(source, tmp_path, kind):
    """sae-lens's own loader reads the exported directory; its latents and reconstructions are ours."""
    sae_lens = pytest.importorskip("sae_lens")
    from safetensors.torch import load_file

    from ontogeny.sae import to_sae_lens
    from ontogeny.sae.model import EnsembleSAE

    run = train_run_saes(source, tmp_path / "s", seeds=2, steps=20, width=16, k=3, control=False, kind=kind)
    out = to_sae_lens(run, 1, tmp_path / "lens")
    theirs = sae_lens.SAE.load_from_disk(out)
    state = load_file(str(run.path / run.checkpoints().query("member == 1").path.iloc[-1]))
    ours = EnsembleSAE(*state["W_enc"].shape, [0], kind=kind, k=3)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(ours, name)[0] = state[name]
    x = torch.randn(1, 50, state["W_enc"].shape[0], generator=torch.Generator().manual_seed(0))
    recon, latents = ours(x)
    torch.testing.assert_close(theirs.encode(x[0]), latents[0].detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(theirs.decode(theirs.encode(x[0])), recon[0].detach(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="not an SAE run"):
        to_sae_lens(source, 0, tmp_path / "nope")
