"""Experiment specs: frozen dataclasses, loaded from TOML, overridden with `key=value`, validated up front.

A spec names a task, a model, an optimizer, the number of steps, the init seeds (`seeds`), the data-order seeds
(`data_orders`), a `sweep` table whose lists form a grid, and the checkpoint schedule (`record`). Every error is
one line naming the file, the key and what is wrong, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

from .exceptions import SpecError
from .registry import Registry
from .validation import validate

RECIPES_DIR = Path(__file__).parent / "recipes"
MAX_SEEDS = 100_000  # per list: far beyond any machine's memory for the smallest model, refused before building it


# ---- tasks and models: each kind defines its own spec class next to its code and registers it ------------------

TASKS = Registry("task", "ontogeny.tasks")
MODELS = Registry("model", "ontogeny.models")
Check = Callable[[bool, str, str], None]  # check(ok, "task.p", "must be at least 2") raises SpecError unless ok


@dataclass(frozen=True)
class Sizes:
    """What the memory estimate and a model need to know of a task's tensors."""

    vocab_size: int | None  # token inputs (None: float inputs)
    n_positions: int  # tokens per example
    n_inputs: int  # float features per example
    n_outputs: int  # logits per example
    batch: int  # largest training batch of one member
    n_eval: int  # probe examples evaluated at a checkpoint
    objective: str | None = None  # language tasks: "causal" | "masked" (an output at every position)


@dataclass(frozen=True)
class TaskSpec:
    """Base of every task's spec. A task module subclasses it (with its own fields) and registers it in TASKS."""

    name: str = ""

    member_fields: ClassVar[frozenset[str]] = frozenset()  # task fields that may differ inside one ensemble

    def check(self, check: Check) -> None:
        """Refuse impossible values, one `check(ok, "task.<field>", message)` per rule."""

    def sizes(self, spec: Spec) -> Sizes:
        raise NotImplementedError

    @classmethod
    def build(cls, tasks: list, data_seeds: list[int], max_probe_examples: int):
        """The `tasks.Task` serving an ensemble whose member m has spec `tasks[m]` and data seed `data_seeds[m]`."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModelSpec:
    """Base of every model's spec. A model module subclasses it and registers it in MODELS."""

    name: str = ""
    init_scale: float = 1.0  # may differ between members of one ensemble

    def check(self, check: Check, sizes: Sizes) -> None:
        """Refuse impossible values (and tasks the model cannot read), one `check(...)` per rule."""

    def memory(self, sizes: Sizes) -> tuple[int, int]:
        """(parameters of one member, activation values per example) for the memory estimate."""
        raise NotImplementedError

    def build(self, sizes: Sizes, init_seeds: list[int], init_scales: list[float] | None = None):
        """The ensemble `nn.Module`, one member per init seed."""
        raise NotImplementedError


# ---- optimizer, recording, the whole spec ---------------------------------------------------------------------


@dataclass(frozen=True)
class OptimSpec:
    """The optimizer and its learning-rate schedule (linear warmup, then constant, cosine or linear decay)."""

    name: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    grad_clip: float = 0.0  # per-member global norm; 0: off
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | cosine | linear

    def lr_factor(self, step: int, total_steps: int) -> float:
        """Multiplier of the base learning rate at `step`: linear warmup, then constant, cosine or linear decay to 0."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, total_steps - self.warmup_steps)
        if self.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress


@dataclass(frozen=True)
class RecordSpec:
    """Checkpoint schedule: `per_octave` log-spaced steps up to `every`, then every `every` steps, and the last."""

    every: int = 100
    per_octave: int = 4
    weights_every: int = 0  # save weights at multiples of this (and the last step); 0: last step only
    examples: bool = True  # per-example loss and correctness
    max_probe_examples: int = 10_000  # per split; a larger split is probed on a fixed sample


# Fields that may differ between members of one ensemble (they change no tensor shape), besides the task's own.
MEMBER_FIELDS = frozenset({"optim.lr", "optim.weight_decay", "optim.grad_clip", "model.init_scale"})


@dataclass(frozen=True)
class Spec:
    """A resolved experiment: what to train, how, on which seeds, and when to record."""

    name: str = "run"
    description: str = ""
    source: str = ""  # the paper a recipe follows
    differs: str = ""  # where and why it differs from that paper
    steps: int = 1000
    seeds: tuple[int, ...] = (0,)
    data_orders: tuple[int, ...] = (0,)
    device: str = "cpu"
    precision: str = "float32"  # float32, or bfloat16: matmuls in bf16 under autocast, fp32 weights and optimizer
    cuda_graphs: bool = False  # on a GPU: capture a training step once, replay it (train/graphs.py); a CPU ignores it
    task: TaskSpec = field(default_factory=lambda: TASKS.get("modular")())
    model: ModelSpec = field(default_factory=lambda: MODELS.get("mlp")())
    optim: OptimSpec = field(default_factory=OptimSpec)
    record: RecordSpec = field(default_factory=RecordSpec)
    sweep: tuple[tuple[str, tuple], ...] = ()  # (dotted key, values) pairs; their product is the grid

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain TOML-ready data (tuples as lists)."""
        data = dataclasses.asdict(self)
        data["sweep"] = {key: list(values) for key, values in self.sweep}
        return _lists(data)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def member_fields(self) -> frozenset[str]:
        """Dotted keys that may differ between the members of one ensemble."""
        return MEMBER_FIELDS | {f"task.{name}" for name in self.task.member_fields}

    def get(self, key: str) -> Any:
        """Return the value at a dotted key such as 'optim.lr'."""
        value: Any = self
        for part in key.split("."):
            value = getattr(value, part)
        return value

    def grid(self) -> list[dict[str, Any]]:
        """Return the sweep's grid points, each a {dotted key: value} dict, in declaration order."""
        keys = [key for key, _ in self.sweep]
        return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in self.sweep))]

    def at(self, point: dict[str, Any]) -> Spec:
        """Return this spec with one grid point's values set (and no sweep)."""
        data = self.to_dict()
        data["sweep"] = {}
        for key, value in point.items():
            _set_dotted(data, key, value)
        return from_dict(data, check_machine=False)  # the whole spec's memory was checked already


# ---- loading --------------------------------------------------------------------------------------------------


def spec_hash(spec: Spec) -> str:
    """The sha256 of the resolved spec (its canonical TOML), kept in meta.json to notice an edited spec."""
    return hashlib.sha256(spec.to_toml().encode()).hexdigest()


def trained_under(path: str | Path, spec: Spec, trained: str | None) -> bool:
    """Whether the spec file at `path` (read as `spec`) is the one its run was trained under (meta.json's sha256
    `trained`, None if unknown): its bytes hash to it, or what it resolves to does. The bytes count first because a
    spec written before ontogeny gained a field lacks that field, which its default fills in when read."""
    return (trained is None or hashlib.sha256(Path(path).read_bytes()).hexdigest() == trained
            or spec_hash(spec) == trained)


def load_spec(spec: str | Path, overrides: list[str] | dict[str, Any] | None = None, *,
              check_machine: bool = True) -> Spec:
    """Load a spec from a TOML file or a built-in recipe name, apply `overrides` and validate it.

    `overrides` are `key=value` strings (values parsed as TOML, else taken as strings) or a {key: value} dict.
    `check_machine=False` skips the checks against this machine (memory, CUDA), for reading a finished run's spec.
    """
    path = Path(spec)
    recipe = RECIPES_DIR / f"{spec}.toml"
    if not path.suffix and not path.is_file() and recipe.exists():  # a folder named like a recipe (its old run)
        path = recipe
    elif not path.suffix and not path.exists():
        raise SpecError(f"no such file or recipe (recipes: {', '.join(recipe_names())})", source=str(spec))
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        data.pop("paper", None)  # a recipe's record of its source's settings (`recipe_fidelity`), not a setting
    except FileNotFoundError:
        raise SpecError("no such file", source=source) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", source=source) from None
    except UnicodeDecodeError:
        raise SpecError("not a text (UTF-8) file", source=source) from None
    except OSError as err:
        raise SpecError(f"cannot read it ({err.strerror or err})", source=source) from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"invalid TOML: {err}", source=source) from None
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = [_parse_override(text) for text in overrides or []]
    for section in ("task", "model"):  # a new task or model kind starts from its own defaults, not the file's
        kind = dict(pairs).get(f"{section}.name")
        if kind is not None and kind != data.get(section, {}).get("name"):
            data[section] = {}
    for key, value in pairs:
        _set_dotted(data, key, value)
    _say_what_changed(data, pairs)
    return from_dict(data, source=source, check_machine=check_machine)


CHANGED = " [changed here: "


def _say_what_changed(data: dict[str, Any], pairs: list[tuple[str, Any]]) -> None:
    """Overrides make a run differ from the file's words: its description and `differs` say which keys changed
    (unless the overrides set those texts themselves), so "8 seeds, lr 1e-2" is not read as this run's settings."""
    texts = ("name", "description", "differs", "source")
    changes = "; ".join(f"{key} = {value!r}" for key, value in pairs if key not in texts)
    if not changes or any(key in ("description", "differs") for key, _ in pairs):
        return
    data["description"] = f"{data.get('description', '')}{CHANGED}{changes}]"
    if data.get("differs"):
        data["differs"] = f"This run also differs from the recipe: {changes}. {data['differs']}"


def changed_keys(spec: Spec) -> str:
    """The overrides a spec's description records ("optim.lr = 0.003; seeds = 3"), or ""."""
    head, marker, tail = spec.description.rpartition(CHANGED)
    return tail[:-1] if marker and tail.endswith("]") else ""


def from_dict(data: dict[str, Any], *, source: str | None = None, check_machine: bool = True) -> Spec:
    """Build and validate a `Spec` from nested plain data (as read from TOML)."""
    data = dict(data)
    sections = {}
    for section, registry in (("task", TASKS), ("model", MODELS)):
        table = dict(_table(data.pop(section, {}), section, source))
        kind = table.get("name", "modular" if section == "task" else "mlp")
        try:
            cls = registry.get(kind)
        except LookupError as err:
            raise SpecError(str(err), source=source, key=f"{section}.name") from None
        sections[section] = _build(cls, table, section, source)
    for section, cls in (("optim", OptimSpec), ("record", RecordSpec)):
        sections[section] = _build(cls, _table(data.pop(section, {}), section, source), section, source)
    sweep = _flatten(_table(data.pop("sweep", {}), "sweep", source))
    for key in ("seeds", "data_orders"):
        if key in data:
            data[key] = _seed_list(data[key], key, source)
    top = _build(Spec, data, "", source, exclude={"task", "model", "optim", "record", "sweep"})
    spec = dataclasses.replace(top, **sections, sweep=())
    sweep_pairs = []
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise SpecError("a sweep value must be a non-empty list", source=source, key=f"sweep.{key}")
        if key in ("seeds", "data_orders", "steps") or key.split(".")[0] not in ("task", "model", "optim", "record"):
            raise SpecError("only task.*, model.*, optim.* and record.* keys can be swept", source=source,
                            key=f"sweep.{key}")
        sweep_pairs.append((key, tuple(values)))
    spec = dataclasses.replace(spec, sweep=tuple(sweep_pairs))
    validate(spec, source, check_machine=check_machine)
    for point in spec.grid() if spec.sweep else []:  # every grid point must be a valid spec too
        try:
            spec.at(point)
        except SpecError as err:
            raise SpecError(f"at point {point}: {err}", source=source, key="sweep") from None
    return spec


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def recipe_about(name: str) -> dict[str, str]:
    """A recipe's `description` and `source`, read from its file without building the spec (no torch import)."""
    text = tomllib.loads((RECIPES_DIR / f"{name}.toml").read_text())
    return {key: text.get(key, "") for key in ("description", "source")}


def recipe_fidelity(name: str) -> list[tuple[str, Any, Any]]:
    """(setting, the source's value, this recipe's value) for every setting the recipe's `[paper]` table records."""
    paper = tomllib.loads((RECIPES_DIR / f"{name}.toml").read_text()).get("paper", {})
    spec = load_spec(name, check_machine=False)
    return [(key, _lists(value), _lists(spec.get(key))) for key, value in paper.items()]


# ---- helpers --------------------------------------------------------------------------------------------------


def _build(cls, table: dict, section: str, source: str | None, exclude: set[str] = frozenset()):
    """Instantiate dataclass `cls` from `table`, refusing unknown keys and values of the wrong type."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.name not in exclude]
    kwargs = {}
    for key, value in table.items():
        dotted = f"{section}.{key}" if section else key
        if key not in known:
            raise SpecError(f"unknown key (known: {', '.join(known)})", source=source, key=dotted)
        kwargs[key] = _coerce(value, hints[key], dotted, source)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str, source: str | None) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SpecError(f"must be a list (got {value!r})", source=source, key=key)
        args = typing.get_args(hint)
        item_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(item_types) != len(value):
            raise SpecError(f"must have {len(item_types)} items (got {value!r})", source=source, key=key)
        return tuple(_coerce(v, t, key, source) for v, t in zip(value, item_types))
    if origin in (types.UnionType, typing.Union):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool) or hint is not bool and isinstance(value, bool):
        raise SpecError(f"must be {hint.__name__} (got {value!r})", source=source, key=key)
    if not isinstance(value, hint):
        raise SpecError(f"must be {hint.__name__} (got {value!r})", source=source, key=key)
    return value


def _seed_list(value: Any, key: str, source: str | None) -> tuple[int, ...]:
    """`seeds = 8` means seeds 0..7; a list names them."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise SpecError(f"must be between 1 and {MAX_SEEDS} (got {value})", source=source, key=key)
        return tuple(range(value))
    if isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise SpecError(f"must be a count or a list of integers (got {value!r})", source=source, key=key)


def _table(value: Any, key: str, source: str | None) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"must be a table (got {value!r})", source=source, key=key)
    return value


def _flatten(table: dict, prefix: str = "") -> dict:
    """{'task': {'p': [..]}} -> {'task.p': [..]} (TOML dotted keys arrive nested)."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if parts[0] == "sweep":  # sweep keys are dotted themselves: sweep.task.p
        data.setdefault("sweep", {})[".".join(parts[1:])] = value
        return
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError("is not a table", key=key)
    node[parts[-1]] = value


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"override must look like key=value (got {text!r})", key="--set")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: take it as a string
    return key.strip(), value


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lists(v) for v in obj]
    return obj
