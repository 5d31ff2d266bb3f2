"""ontogeny: train many seeds as one ensemble, record dense histories, find what the loss curve hides."""

__version__ = "0.1.0"

import importlib

from .exceptions import OntogenyError, ResumeError, SpecError, StoreError  # noqa: F401 (in __all__ below)

# Everything else loads on first use (PEP 562), so `ontogeny --help` does not wait for torch: {name: (module, attr)}
_LAZY = {
    "OptimSpec": (".spec", "OptimSpec"), "RecordSpec": (".spec", "RecordSpec"), "Spec": (".spec", "Spec"),
    "load_spec": (".spec", "load_spec"), "recipe_names": (".spec", "recipe_names"),
    "ModularSpec": (".tasks", "ModularSpec"), "MultitaskParitySpec": (".tasks", "MultitaskParitySpec"),
    "SparseParitySpec": (".tasks", "SparseParitySpec"),
    "MLPSpec": (".models", "MLPSpec"), "TransformerSpec": (".models", "TransformerSpec"),
    "Run": (".store", "Run"), "open": (".store", "open_run"),
    "log_spaced": (".evaluation.schedule", "log_spaced"),
    "ProbeSet": (".probe_sets", "ProbeSet"), "Recorder": (".recorder", "Recorder"),
    "ingest": (".suites", "ingest"), "run": (".train.run", "run"), "train_saes": (".sae", "train_run_saes"),
    "analysis": (".analysis", None),  # og.analysis.analyze, og.analysis.TransitionDetector, ...
}
# Specs are named as specs (the task or model itself is another class); the old names say where they went.
_RENAMED = {"Optim": "OptimSpec", "Record": "RecordSpec", "ModularTask": "ModularSpec", "MLPModel": "MLPSpec",
            "MultitaskParityTask": "MultitaskParitySpec", "SparseParityTask": "SparseParitySpec",
            "TransformerModel": "TransformerSpec"}


def __getattr__(name: str):
    if name in _RENAMED:
        raise AttributeError(f"ontogeny.{name} is now ontogeny.{_RENAMED[name]}")
    if name not in _LAZY:
        raise AttributeError(f"module 'ontogeny' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module, __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(["OntogenyError", "ResumeError", "SpecError", "StoreError", *_LAZY])
