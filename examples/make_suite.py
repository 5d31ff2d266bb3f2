"""Make a small checkpoint suite on disk, as Pythia's are published: a GPT-NeoX (Pythia's architecture) trained on
sentences of a tiny grammar, saved with `save_pretrained` at log-spaced steps, one folder per step, per seed.

    python examples/make_suite.py suites/tiny --seeds 0 1     # suites/tiny-seed0/step0 ... step512, tokenizer
    ontogeny ingest suites/tiny-seed0 --members suites/tiny-seed1 --probe suites/tiny-probe.txt --out runs/suite

(On a machine that reaches the hub, `ontogeny ingest EleutherAI/pythia-70m --members EleutherAI/pythia-70m-seed1
--probe text.txt --out runs/pythia` ingests the real suite the same way.)
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

NOUNS = ["cat", "dog", "bird", "fish", "horse", "mouse"]
VERBS = ["sees", "likes", "chases", "follows"]
ADJECTIVES = ["big", "small", "red", "old"]


def sentences(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        subject = f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}" if rng.random() < 0.3 else f"the {rng.choice(NOUNS)}"
        out.append(f"{subject} {rng.choice(VERBS)} the {rng.choice(NOUNS)}")
    return " . ".join(out) + " ."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator([sentences(500, 0)], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    args.prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.prefix}-probe.txt").write_text(sentences(200, 999))
    saves = {0, *(2**i for i in range(20) if 2**i <= args.steps)}
    for seed in args.seeds:
        root = Path(f"{args.prefix}-seed{seed}")
        tokenizer.save_pretrained(root)
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=128,
                                                 max_position_embeddings=64))
        ids = torch.tensor(tokenizer(sentences(3000, seed + 1))["input_ids"])
        data = ids[: len(ids) // 32 * 32].reshape(-1, 32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for step in range(args.steps + 1):
            if step in saves:
                model.save_pretrained(root / f"step{step}")
            batch = data[torch.randint(0, len(data), (32,), generator=torch.Generator().manual_seed(seed * 10**6 + step))]
            loss = model(batch, labels=batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"{root}: {len(saves)} checkpoints, final train loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
