"""Where a checkpoint suite's models come from: the Hugging Face hub (one revision per step, as Pythia), a local
directory of `step*/` folders written by `save_pretrained`, state-dict files plus a function that builds the model
(a Hugging Face model, a TransformerLens `HookedTransformer` or any causal LM), or the checkpoints TransformerLens
lists for a model (`tl:NAME`).

Every source lists its revisions with their training steps and loads one revision as an evaluation-mode model. A
revision's step is read from its name (`step1000`, `step-1000`, `step_1000`): the one convention suites use.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..exceptions import IngestError

STEP = re.compile(r"step[-_]?(\d+)")
# Pythia's 154 checkpoints (Biderman et al. 2023): step 0, log-spaced 1..512, then every 1000 steps to 143000.
PYTHIA_REVISIONS = ["step0", *(f"step{2**i}" for i in range(10)), *(f"step{s}" for s in range(1000, 143001, 1000))]
# Config fields that change between saves without changing the model.
VOLATILE_CONFIG = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "device")


def step_of(name: str) -> int | None:
    """The training step in a revision, folder or file name ('step1000' -> 1000), or None."""
    match = STEP.search(name)
    return int(match.group(1)) if match else None


class Source:
    """One member's checkpoint series."""

    name: str

    def revisions(self) -> list[str]:
        raise NotImplementedError

    def load(self, revision: str) -> nn.Module:
        raise NotImplementedError

    def check(self, revisions: list[str]) -> None:
        """Raise IngestError naming the first of `revisions` that does not exist, or whose files are cut short or
        have a damaged header (local files only: headers are read, not tensors, so this costs little), or differ
        from the sha256 the suite ships in a `SHA256SUMS` file (then every listed file is read once)."""
        known = set(self.revisions())
        missing = [r for r in revisions if r not in known]
        if missing:
            raise IngestError(f"{self.name}: no revision {missing[0]} (revisions: {', '.join(sorted(known, key=step_of)[:8])}"
                              f"{', ...' if len(known) > 8 else ''})")
        sums = shipped_hashes(Path(self.path)) if hasattr(self, "path") else {}
        for revision in revisions:
            for path in self.files(revision):
                check_file(path)
                check_hash(path, sums)

    def files(self, revision: str) -> list[Path]:
        """The local files a revision loads from (none for remote sources)."""
        return []

    def tokenizer(self):
        """The suite's tokenizer (a `transformers` tokenizer), or None."""
        return None


class HubSource(Source):
    """A model id on the Hugging Face hub, one revision (branch) per checkpoint, loaded through the local cache."""

    def __init__(self, model_id: str):
        self.name = model_id

    def revisions(self) -> list[str]:
        return list(PYTHIA_REVISIONS)

    def check(self, revisions: list[str]) -> None:
        """Ask the hub which branches exist (skipped offline: a missing revision then fails when it loads)."""
        try:
            from huggingface_hub import list_repo_refs

            known = {branch.name for branch in list_repo_refs(self.name).branches}
        except Exception:  # noqa: BLE001 (no network, or no such repo: loading says which)
            return
        missing = [r for r in revisions if r not in known]
        if missing:
            raise IngestError(f"{self.name}: no revision {missing[0]} on the hub")

    def load(self, revision: str) -> nn.Module:
        from transformers import AutoModelForCausalLM

        try:
            loaded = AutoModelForCausalLM.from_pretrained(self.name, revision=revision, output_loading_info=True)
        except Exception as err:  # noqa: BLE001 (unknown revision, no network and no cache, a damaged file)
            raise IngestError(f"{self.name}@{revision}: cannot load ({_first_line(err)})") from None
        return _whole(*loaded, f"{self.name}@{revision}")

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.name)
        except (OSError, ValueError) as err:
            raise IngestError(f"{self.name}: cannot load its tokenizer ({_first_line(err)})") from None


class LensSource(Source):
    """A model whose checkpoints TransformerLens lists (`tl:stanford-gpt2-small-a`, `tl:pythia-160m`, ...): one
    revision per listed step, loaded with `HookedTransformer.from_pretrained_no_processing` (the weights as trained,
    not folded or centred) through the Hugging Face cache."""

    PREFIX = "tl:"

    def __init__(self, source: str):
        self.name, self.model = source, source[len(self.PREFIX):]
        lens = _transformer_lens()
        try:
            self.official = lens.loading_from_pretrained.get_official_model_name(self.model)
            labels, kind = lens.loading_from_pretrained.get_checkpoint_labels(self.official)
        except Exception as err:  # noqa: BLE001 (unknown name, not checkpointed, hub unreachable)
            reason = _first_line(err).split(" Valid official model names")[0]  # not its list of every model
            raise IngestError(f"{source}: TransformerLens lists no checkpoints for it ({reason})") from None
        if kind != "step":
            raise IngestError(f"{source}: its checkpoints are labelled by tokens seen, not by steps")
        self._revisions = [f"step{label}" for label in labels]

    def revisions(self) -> list[str]:
        return list(self._revisions)

    def load(self, revision: str) -> nn.Module:
        lens = _transformer_lens()
        try:
            model = lens.HookedTransformer.from_pretrained_no_processing(
                self.official, checkpoint_value=step_of(revision), device="cpu")
        except Exception as err:  # noqa: BLE001 (no network and no cache, a damaged file)
            raise IngestError(f"{self.name}@{revision}: cannot load ({_first_line(err)})") from None
        return model.eval()

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.official)
        except (OSError, ValueError) as err:
            raise IngestError(f"{self.name}: cannot load its tokenizer ({_first_line(err)})") from None


def _transformer_lens():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it and its dependencies warn on import
            import transformer_lens
            import transformer_lens.loading_from_pretrained  # noqa: F401
    except ImportError:
        raise IngestError("tl: sources need TransformerLens: pip install transformer_lens") from None
    return transformer_lens


class DirectorySource(Source):
    """A local suite: `DIR/step<N>/` folders as written by `save_pretrained`, the tokenizer in DIR or in them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.name = str(self.path)

    def revisions(self) -> list[str]:
        folders = [p.name for p in self.path.iterdir() if p.is_dir() and step_of(p.name) is not None]
        if not folders:
            raise IngestError(f"{self.path}: no step*/ checkpoint folders")
        return sorted(folders, key=step_of)

    def load(self, revision: str) -> nn.Module:
        from transformers import AutoModelForCausalLM

        folder = self.path / revision
        if not folder.is_dir():
            raise IngestError(f"{folder}: no such checkpoint folder (revisions: {', '.join(self.revisions()[:8])}...)")
        try:
            loaded = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
        except Exception as err:  # noqa: BLE001 (safetensors, torch and transformers each raise their own kinds)
            raise IngestError(f"{folder}: the checkpoint does not load ({_first_line(err)})") from None
        return _whole(*loaded, str(folder))

    def files(self, revision: str) -> list[Path]:
        folder = self.path / revision
        return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json") and p.is_file())

    def tokenizer(self):
        from transformers import AutoTokenizer

        for folder in (self.path, *(self.path / r for r in self.revisions()[:1])):
            if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(folder)
        return None


class StateDictSource(Source):
    """State-dict files (`step<N>.pt` or `.safetensors`) in a directory, and `module:function` that builds the model."""

    def __init__(self, path: str | Path, build: str):
        self.path, self.build = Path(path), build
        self.name = str(self.path)
        module, _, function = build.partition(":")
        try:
            self._builder = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError, ValueError) as err:
            raise IngestError(f"--build {build}: cannot import it ({_first_line(err)}); give module:function") from None

    def revisions(self) -> list[str]:
        files = [p.name for p in self.path.iterdir()
                 if p.suffix in (".pt", ".safetensors") and step_of(p.name) is not None]
        if not files:
            raise IngestError(f"{self.path}: no step*.pt or step*.safetensors state dicts")
        return sorted(files, key=step_of)

    def files(self, revision: str) -> list[Path]:
        return [self.path / revision]

    def load(self, revision: str) -> nn.Module:
        path = self.path / revision
        if not path.is_file():
            raise IngestError(f"{path}: no such state dict")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            model = self._builder()
            model.load_state_dict(state)
        except Exception as err:  # noqa: BLE001 (a file or builder that does not fit: one line, whatever the cause)
            raise IngestError(f"{path}: the checkpoint does not load ({_first_line(err)})") from None
        return model.eval()


def _whole(model: nn.Module, info: dict, where: str) -> nn.Module:
    """The model in evaluation mode if its weights file filled every parameter exactly; else IngestError: a config
    that says 3 layers over weights of 2 would score a freshly initialized layer, not the checkpoint."""
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = list(info.get(kind) or [])
        if keys:
            shown = ", ".join(str(k[0] if isinstance(k, tuple) else k) for k in keys[:3])
            raise IngestError(f"{where}: the weights do not match the model's config ({len(keys)} "
                              f"{kind.replace('_', ' ')}: {shown}{', ...' if len(keys) > 3 else ''})")
    return model.eval()


def open_source(source: str, build: str | None = None) -> Source:
    """A local directory (of `step*/` folders, or with `build` of state dicts), `tl:NAME` (a model TransformerLens
    lists checkpoints of), or else a hub model id."""
    path = Path(source)
    if source.startswith(LensSource.PREFIX) and build is None:
        return LensSource(source)
    if build is not None:
        if not path.is_dir():
            raise IngestError(f"{source}: --build needs a directory of step*.pt / step*.safetensors state dicts")
        return StateDictSource(path, build)
    if not path.is_dir() and (path.exists() or source.startswith((".", "/")) or source.count("/") != 1):
        raise IngestError(f"{source}: neither a directory of step*/ checkpoints nor a hub model id (owner/name)")
    try:
        import transformers  # noqa: F401 (hub ids and save_pretrained folders load through it)
    except ImportError:
        raise IngestError("ingesting a Hugging Face suite needs transformers: pip install 'ontogeny[hf]'") from None
    return DirectorySource(path) if path.is_dir() else HubSource(source)


SUMS_FILE = "SHA256SUMS"  # `sha256sum` output beside a suite's checkpoints: "<hex>  <path relative to the suite>"


def shipped_hashes(root: Path) -> dict[Path, str]:
    """{file: sha256} from the suite's SHA256SUMS, {} when it ships none; IngestError for a line that is not
    `<64 hex digits> <path>`."""
    sums = root / SUMS_FILE
    if not sums.is_file():
        return {}
    hashes = {}
    for number, line in enumerate(sums.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        name = name.strip().removeprefix("*")  # sha256sum marks binary mode with '*'
        if len(digest) != 64 or not all(c in "0123456789abcdefABCDEF" for c in digest) or not name:
            raise IngestError(f"{sums}:{number}: not '<sha256> <path>' ({line.strip()[:80]!r})")
        hashes[(root / name).resolve()] = digest.lower()
    return hashes


def check_hash(path: Path, hashes: dict[Path, str]) -> None:
    """IngestError if `path` is listed in `hashes` with another sha256 than its bytes have (damage inside the
    tensors, which loads without an error and scores as garbage)."""
    expected = hashes.get(path.resolve())
    if expected is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise IngestError(f"{path}: its sha256 is not the one the suite's {SUMS_FILE} lists (the file is damaged); "
                          "nothing was ingested")


def check_file(path: Path) -> None:
    """IngestError if a checkpoint file is cut short or its header is garbled: a safetensors header that does not
    cover the file, a zip archive (torch.save's format) without its directory, JSON that does not parse."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as file:
                file.keys()
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            with open(path, "rb") as file:
                zipped = file.read(4) == b"PK\x03\x04"
            if zipped:  # the legacy pickle format has no directory to check: loading it will tell
                with zipfile.ZipFile(path) as archive:
                    archive.namelist()
    except Exception as err:  # noqa: BLE001 (each format raises its own kinds)
        raise IngestError(f"{path}: the checkpoint does not load ({_first_line(err)}); nothing was ingested") from None


def weights_hash(model: nn.Module) -> str:
    """sha256 of the model's parameters and buffers (names and bytes, in name order): equal weights, equal hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        # reshaped first: a 0-dim tensor (TransformerLens's attn.IGNORE) has no byte view of its own
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def config_hash(model: nn.Module) -> str:
    """sha256 of the model's config, Hugging Face's or TransformerLens's (without fields that change between saves),
    '' without one."""
    config = model_config(model)
    if config is None:
        return ""
    data = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_CONFIG}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def model_config(model: nn.Module):
    """A Hugging Face model's `config` or a TransformerLens model's `cfg`, None for other models."""
    config = getattr(model, "config", None)
    return config if config is not None else getattr(model, "cfg", None)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
