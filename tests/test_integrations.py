"""The Hugging Face Trainer callback and the Lightning callback, each training a tiny model for real."""

import pandas as pd
import pytest
import torch
from torch import nn

import ontogeny as og

VOCAB, LENGTH = 32, 16


def token_data(n: int, seed: int) -> torch.Tensor:
    """Sequences that count up from a random start (mod VOCAB): learnable in a few steps."""
    start = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (start + torch.arange(LENGTH)) % VOCAB


def tiny_llama():
    # Llama rather than GPT-NeoX here: transformers 5.24's Trainer resumes GPT-NeoX without its output layer
    # (it warns "missing keys ['lm_head.weight']"), which would make the resumed run differ for reasons not ours.
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=LENGTH)
    return LlamaForCausalLM(config)


def hf_trainer(output_dir, callback, *, fail_at: int | None = None):
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == fail_at:
                raise KeyboardInterrupt  # as if the process died here

    tokens = token_data(64, seed=1)
    train = Dataset.from_dict({"input_ids": tokens.tolist(), "labels": tokens.tolist()})
    args = TrainingArguments(output_dir=str(output_dir), max_steps=12, per_device_train_batch_size=8,
                             learning_rate=3e-3, save_steps=6, logging_steps=3, report_to=[], seed=0,
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    return Trainer(model=tiny_llama(), args=args, train_dataset=train, callbacks=[callback, Crash()])


def test_hf_trainer_callback_records_per_token_losses_and_survives_a_resume(tmp_path):
    pytest.importorskip("transformers", reason="the hf extra: pip install 'ontogeny[hf]'")
    from ontogeny.integrations.hf import OntogenyCallback

    def callback(run_dir):
        return OntogenyCallback(run_dir, member={"seed": 0}, every=og.log_spaced(per_octave=1, until=4, then_every=2),
                                probes={"heldout": og.ProbeSet.tokens(token_data(4, seed=2))})

    hf_trainer(tmp_path / "out-ref", callback(tmp_path / "reference")).train()
    reference = og.open(tmp_path / "reference")

    crashing = callback(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        hf_trainer(tmp_path / "out", crashing, fail_at=9).train()
    crashing.recorder.writer.close()  # the process died: the kernel drops its lock
    hf_trainer(tmp_path / "out", callback(tmp_path / "run")).train(resume_from_checkpoint=str(tmp_path / "out" /
                                                                                          "checkpoint-6"))
    resumed = og.open(tmp_path / "run")
    # The Trainer's end-of-session summary: timings, and the mean loss of this session's steps only.
    timing = ("train/train_runtime", "train/train_samples_per_second", "train/train_steps_per_second",
              "train/train_loss")
    for table in ("scalars", "examples"):
        got, want = (getattr(run, table)() for run in (resumed, reference))
        if table == "scalars":
            got, want = (frame[~frame.name.isin(timing)].reset_index(drop=True) for frame in (got, want))
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5, obj=table)
    examples = reference.examples(step=12)
    assert len(examples) == 4 * (LENGTH - 1) and examples.example.min() == 1  # (sequence, position >= 1)
    assert sorted(set(reference.examples().step)) == [0, 1, 2, 4, 6, 8, 10, 12]
    assert {"train/loss", "heldout/loss", "heldout/acc"} <= set(reference.scalars().name)
    tokens = reference.tokens()
    assert len(tokens) == 4 * (LENGTH - 1) and (tokens.position >= 1).all()
    first = examples.iloc[0]
    assert tokens.set_index("example").loc[first.example, "token"] == token_data(4, seed=2)[0, 1]
    assert reference.members().status.tolist() == ["ok"]
    curve = reference.scalars(name="heldout/loss").value.to_numpy()
    assert curve[-1] < curve[0]  # it learned


@pytest.mark.filterwarnings("ignore::UserWarning")  # Lightning's advice about dataloader workers and loggers
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # Lightning 2.6 on torch 2.13
def test_lightning_callback_records_a_fit(tmp_path):
    lightning = pytest.importorskip("lightning", reason="the lightning extra: pip install 'ontogeny[lightning]'")
    from ontogeny.integrations.lightning import OntogenyCallback

    gen = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(256, 4, generator=gen), torch.randn(50, 4, generator=gen)
    y, y_test = (x[:, 0] > 0).long(), (x_test[:, 0] > 0).long()

    class Classifier(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            loss = nn.functional.cross_entropy(self(batch[0]), batch[1])
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    # a probe set `train` writes train/loss itself: the logged train/loss is left out, with one warning
    callback = OntogenyCallback(tmp_path / "run", member={"seed": 0, "lr": 0.5},
                                probes={"test": (x_test, y_test), "train": (x[:50], y[:50])},
                                every=og.log_spaced(per_octave=2, until=8, then_every=8))
    trainer = lightning.Trainer(max_steps=24, callbacks=[callback], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.warns(UserWarning, match="not recording the logged train/loss"):
        trainer.fit(Classifier(), loader)
    run = og.open(tmp_path / "run")
    assert run.scalars().groupby(["member", "step", "name"]).size().max() == 1
    assert run.members()[["seed", "lr", "status"]].values.tolist() == [[0, 0.5, "ok"]]
    assert sorted(set(run.examples().step)) == [0, 1, 2, 3, 4, 6, 8, 16, 24]
    acc = run.scalars(name="test/acc").set_index("step").value
    assert acc[24] > 0.9 > acc[0]
    assert "train/loss" in set(run.scalars().name)


def test_a_logged_name_a_probe_set_writes_is_refused(tmp_path):
    """`train/loss` logged beside a probe set `train` (which writes train/loss itself) gave two rows for one curve
    at one step; the recorder refuses it in one line, the HF callback refuses the colliding probe set at once."""
    x, y = torch.randn(20, 3), torch.randint(0, 2, (20,))
    recorder = og.Recorder(tmp_path / "run", member={"seed": 1},
                           probes={"train": og.ProbeSet((x, y), subsets={"odd": [1, 3]})})
    for name in ("train/loss", "train/odd/acc"):
        with pytest.raises(ValueError, match=f"log: {name} is written by the probe set"):
            recorder.log(0, {name: 1.0, "lr": 0.1})
    recorder.log(0, {"train_batch/loss": 1.0})
    recorder.step(0, nn.Linear(3, 2), force=True)
    recorder.close()
    counts = og.open(tmp_path / "run").scalars().groupby(["step", "name"]).size()
    assert counts.max() == 1 and "lr" not in counts.index.get_level_values("name")  # nothing of a refused call
    pytest.importorskip("transformers")
    from ontogeny.integrations.hf import OntogenyCallback

    with pytest.raises(ValueError, match="probe set named 'train'"):
        OntogenyCallback(tmp_path / "other", member={"seed": 1}, probes={"train": (x, y)})


def test_the_lightning_example_records_two_seeds_into_one_run(tmp_path):
    """examples/lightning_module.py as the README runs it: one process per seed, the same run directory."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("lightning", reason="the lightning extra: pip install 'ontogeny[lightning]'")
    example = Path(__file__).resolve().parents[1] / "examples" / "lightning_module.py"
    out = tmp_path / "lightning"
    procs = [subprocess.Popen([sys.executable, str(example), str(out), "--seed", str(seed), "--steps", "50"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    run = og.open(out)
    assert sorted(run.members().seed) == [0, 1]
    scalars = run.scalars()
    assert {"train/loss", "test/acc", "batch_loss"} <= set(scalars.name)
    assert sorted(scalars[scalars.name == "test/loss"].step.unique())[-1] == 50  # log-spaced up to 50
    assert len(run.examples(member=0, step=50)) == 59 * 59  # every pair: train and test probe sets


def test_trainer_logs_are_named_as_transformers_names_them_for_trackers(tmp_path):
    """eval_loss -> eval/loss, loss -> train/loss (Transformers' rewrite_logs); a name a probe set writes itself is left
    out with a warning instead of stopping the training."""
    from types import SimpleNamespace

    import torch

    from ontogeny.integrations.hf import OntogenyCallback

    with pytest.raises(ValueError, match="a probe set named 'eval' would write eval/loss"):
        OntogenyCallback(tmp_path / "refused", member={"seed": 0}, probes={"eval": (torch.zeros(2, 3), [0, 1])})
    probes = {"test": (torch.randn(8, 3), torch.randint(0, 2, (8,)))}
    callback = OntogenyCallback(tmp_path / "run", member={"seed": 0}, probes=probes)
    callback.recorder = og.Recorder(tmp_path / "run", member={"seed": 0}, probes=probes, every=[0])
    logs = {"loss": 1.5, "eval_loss": 2.5, "learning_rate": 0.1, "epoch": 0.5, "test_loss": 9.0, "note": "text"}
    with pytest.warns(UserWarning, match="not recording the Trainer's test/loss: a probe set writes that name"):
        callback.on_log(None, SimpleNamespace(global_step=3), None, logs=logs)
    callback.recorder.close()
    logged = og.open(tmp_path / "run").scalars(step=3).set_index("name").value.to_dict()
    assert logged == {"eval/loss": 2.5, "train/epoch": 0.5, "train/learning_rate": 0.1, "train/loss": 1.5}
