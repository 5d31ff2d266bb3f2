"""Experiment specs: frozen dataclasses, loaded from TOML, overridden with `key=value`, validated up front.

A spec names a task, a model, an optimizer, the number of steps, the init seeds (`seeds`), the data-order seeds
(`data_orders`), a `sweep` table whose lists form a grid, and the checkpoint schedule (`record`). Every error is
one line naming the file, the key and what is wrong, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .exceptions import SpecError

RECIPES_DIR = Path(__file__).parent / "recipes"
MODULAR_OPS = ("+", "-", "*", "/", "a^2+b^2")


# ---- tasks ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModularTask:
    """`a op b mod p` over all p*p pairs (pairs with b=0 dropped for '/'); a `train_fraction` share is trained on."""

    name: str = "modular"
    p: int = 97
    op: str = "+"
    train_fraction: float = 0.3
    split_seed: int = 0
    batch_size: int = 0  # 0: full batch


@dataclass(frozen=True)
class SparseParityTask:
    """Parity of k secret bits out of n (Barak et al. 2022); labels are +-1."""

    name: str = "sparse_parity"
    n: int = 40
    k: int = 3
    n_train: int = 0  # 0: fresh samples every step (online)
    n_test: int = 1000
    batch_size: int = 32
    split_seed: int = 0  # picks the secret bits, the fixed training set and the test set


@dataclass(frozen=True)
class MultitaskParityTask:
    """Multitask sparse parity (Michaud et al. 2023): one-hot control bits pick one of `n_tasks` parities."""

    name: str = "multitask_parity"
    n_tasks: int = 20
    n: int = 30
    k: int = 3
    zipf_exponent: float = 1.4  # P(task i) ~ i^-zipf_exponent, i = 1..n_tasks
    batch_size: int = 2000
    n_test_per_task: int = 200
    split_seed: int = 0  # picks each subtask's bits and the test set


# ---- models ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPModel:
    """An MLP: per-position token embeddings (or raw inputs) -> `depth` hidden layers -> outputs."""

    name: str = "mlp"
    width: int = 128
    depth: int = 1
    activation: str = "relu"  # relu | gelu | square (Gromov 2023)
    bias: bool = True
    init_scale: float = 1.0


@dataclass(frozen=True)
class TransformerModel:
    """A decoder-only transformer that reads the output at the last position."""

    name: str = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    layer_norm: bool = False
    activation: str = "relu"
    init_scale: float = 1.0


# ---- optimizer, recording, the whole spec ---------------------------------------------------------------------


@dataclass(frozen=True)
class Optim:
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


@dataclass(frozen=True)
class Record:
    """Checkpoint schedule: `per_octave` log-spaced steps up to `every`, then every `every` steps, and the last."""

    every: int = 100
    per_octave: int = 4
    weights_every: int = 0  # save weights at multiples of this (and the last step); 0: last step only
    examples: bool = True  # per-example loss and correctness
    max_probe_examples: int = 10_000  # per split; a larger split is probed on a fixed sample


TASKS = {cls.name: cls for cls in (ModularTask, SparseParityTask, MultitaskParityTask)}
MODELS = {cls.name: cls for cls in (MLPModel, TransformerModel)}

# Fields that may differ between members of one ensemble (they change no tensor shape).
MEMBER_FIELDS = frozenset(
    {"optim.lr", "optim.weight_decay", "optim.grad_clip", "model.init_scale", "task.train_fraction", "task.split_seed"}
)


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
    task: ModularTask | SparseParityTask | MultitaskParityTask = field(default_factory=ModularTask)
    model: MLPModel | TransformerModel = field(default_factory=MLPModel)
    optim: Optim = field(default_factory=Optim)
    record: Record = field(default_factory=Record)
    sweep: tuple[tuple[str, tuple], ...] = ()  # (dotted key, values) pairs; their product is the grid

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain TOML-ready data (tuples as lists)."""
        data = dataclasses.asdict(self)
        data["sweep"] = {key: list(values) for key, values in self.sweep}
        return _lists(data)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

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
        return from_dict(data, check_memory=False)  # the whole spec's memory was checked already


# ---- loading --------------------------------------------------------------------------------------------------


def load_spec(spec: str | Path, overrides: list[str] | dict[str, Any] | None = None, *,
              check_memory: bool = True) -> Spec:
    """Load a spec from a TOML file or a built-in recipe name, apply `overrides` and validate it.

    `overrides` are `key=value` strings (values parsed as TOML, else taken as strings) or a {key: value} dict.
    `check_memory=False` skips the check against this machine's memory (for reading a finished run's spec).
    """
    path = Path(spec)
    if not path.suffix and not path.exists():
        path = RECIPES_DIR / f"{spec}.toml"
        if not path.exists():
            raise SpecError(f"no such file or recipe (recipes: {', '.join(recipe_names())})", source=str(spec))
    source = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError("no such file", source=source) from None
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
    return from_dict(data, source=source, check_memory=check_memory)


def from_dict(data: dict[str, Any], *, source: str | None = None, check_memory: bool = True) -> Spec:
    """Build and validate a `Spec` from nested plain data (as read from TOML)."""
    data = dict(data)
    sections = {}
    for section, registry in (("task", TASKS), ("model", MODELS)):
        table = dict(_table(data.pop(section, {}), section, source))
        kind = table.get("name", next(iter(registry)))
        if kind not in registry:
            raise SpecError(f"unknown {section} {kind!r} (known: {', '.join(registry)})", source=source,
                            key=f"{section}.name")
        sections[section] = _build(registry[kind], table, section, source)
    for section, cls in (("optim", Optim), ("record", Record)):
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
    validate(spec, source, check_memory=check_memory)
    for point in spec.grid() if spec.sweep else []:  # every grid point must be a valid spec too
        try:
            spec.at(point)
        except SpecError as err:
            raise SpecError(f"at point {point}: {err}", source=source, key="sweep") from None
    return spec


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


# ---- validation -----------------------------------------------------------------------------------------------


def validate(spec: Spec, source: str | None = None, *, check_memory: bool = True) -> None:
    """Raise `SpecError` for impossible values (and for specs too large for this machine's memory)."""

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise SpecError(f"{message} (got {spec.get(key)!r})", source=source, key=key)

    task, model, optim, record = spec.task, spec.model, spec.optim, spec.record
    check(spec.steps >= 1, "steps", "must be at least 1")
    check(len(spec.seeds) >= 1, "seeds", "needs at least one seed")
    check(len(set(spec.seeds)) == len(spec.seeds), "seeds", "seeds must be distinct")
    check(len(set(spec.data_orders)) == len(spec.data_orders), "data_orders", "data orders must be distinct")
    check(spec.device == "cpu" or spec.device.startswith("cuda"), "device", "must be 'cpu' or 'cuda[:N]'")
    if isinstance(task, ModularTask):
        check(task.p >= 2, "task.p", "must be at least 2")
        check(task.op in MODULAR_OPS, "task.op", f"must be one of {', '.join(MODULAR_OPS)}")
        check(task.op != "/" or _is_prime(task.p), "task.p", "must be prime for division")
        check(0 < task.train_fraction < 1, "task.train_fraction", "must be strictly between 0 and 1")
        check(task.batch_size >= 0, "task.batch_size", "must be >= 0 (0: full batch)")
    elif isinstance(task, SparseParityTask):
        check(task.n >= 1, "task.n", "must be at least 1")
        check(1 <= task.k <= task.n, "task.k", "must be between 1 and task.n")
        check(task.n_train >= 0, "task.n_train", "must be >= 0 (0: online)")
        check(task.n_test >= 1, "task.n_test", "must be at least 1")
        check(task.batch_size >= 1, "task.batch_size", "must be at least 1")
    else:
        check(task.n_tasks >= 1, "task.n_tasks", "must be at least 1")
        check(1 <= task.k <= task.n, "task.k", "must be between 1 and task.n")
        check(task.zipf_exponent >= 0, "task.zipf_exponent", "must be >= 0")
        check(task.batch_size >= 1, "task.batch_size", "must be at least 1")
        check(task.n_test_per_task >= 1, "task.n_test_per_task", "must be at least 1")
    if isinstance(model, MLPModel):
        check(model.width >= 1, "model.width", "must be at least 1")
        check(model.depth >= 1, "model.depth", "must be at least 1")
        check(model.activation in ("relu", "gelu", "square"), "model.activation", "must be relu, gelu or square")
    else:
        check(model.n_layers >= 1, "model.n_layers", "must be at least 1")
        check(model.d_model % model.n_heads == 0, "model.n_heads", "must divide model.d_model")
        check(model.d_mlp >= 1, "model.d_mlp", "must be at least 1")
        check(model.activation in ("relu", "gelu"), "model.activation", "must be relu or gelu")
        check(not isinstance(task, SparseParityTask | MultitaskParityTask), "model.name",
              "the transformer reads tokens; parity tasks give bits (use model.name = 'mlp')")
    check(model.init_scale > 0, "model.init_scale", "must be positive")
    check(optim.name in ("adamw", "sgd"), "optim.name", "must be 'adamw' or 'sgd'")
    check(optim.lr > 0, "optim.lr", "must be positive")
    check(optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    check(all(0 <= b < 1 for b in optim.betas), "optim.betas", "each beta must be in [0, 1)")
    check(optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0: off)")
    check(optim.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    check(optim.schedule in ("constant", "cosine", "linear"), "optim.schedule", "must be constant, cosine or linear")
    check(record.every >= 1, "record.every", "must be at least 1")
    check(record.per_octave >= 1, "record.per_octave", "must be at least 1")
    check(record.weights_every >= 0, "record.weights_every", "must be >= 0")
    check(record.max_probe_examples >= 1, "record.max_probe_examples", "must be at least 1")
    need, have = estimate_memory(spec), _machine_memory()
    if check_memory and have and need > 0.8 * have:
        raise SpecError(f"needs about {need / 2**30:.1f} GiB of memory for {n_members(spec)} members, "
                        f"this machine has {have / 2**30:.1f} GiB (use fewer seeds or a smaller model)",
                        source=source, key="model")


def n_members(spec: Spec) -> int:
    return len(spec.grid()) * len(spec.seeds) * len(spec.data_orders)


def estimate_memory(spec: Spec) -> int:
    """Rough peak bytes of training: weights, grads and optimizer state, and the largest activations (float32)."""
    task, model = spec.task, spec.model
    if isinstance(task, ModularTask):
        vocab, positions, n_in, outputs = task.p + 1, 3, None, task.p
        batch = task.batch_size or int(task.p * task.p * max([task.train_fraction, *_swept(spec, "task.train_fraction")]))
        n_eval = task.p * task.p
    elif isinstance(task, SparseParityTask):
        vocab, positions, n_in, outputs = None, 0, task.n, 1
        batch, n_eval = task.batch_size, task.n_test
    else:
        vocab, positions, n_in, outputs = None, 0, task.n_tasks + task.n, 2
        batch, n_eval = task.batch_size, task.n_tasks * task.n_test_per_task
    if isinstance(model, MLPModel):
        first = (vocab * positions if vocab else n_in) * model.width
        params = first + (model.depth - 1) * model.width**2 + model.width * outputs
        per_example = model.depth * model.width * 3
    else:
        d = model.d_model
        params = vocab * d + positions * d + model.n_layers * (4 * d * d + 2 * d * model.d_mlp) + d * outputs
        per_example = model.n_layers * positions * (6 * d + 2 * model.d_mlp + model.n_heads * positions) + outputs
    members = n_members(spec)
    return 4 * members * (4 * params + 3 * (batch + n_eval) * (per_example + outputs))


def _swept(spec: Spec, key: str) -> list:
    return [v for k, values in spec.sweep if k == key for v in values]


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


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
        if value < 1:
            raise SpecError(f"must be at least 1 (got {value})", source=source, key=key)
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
