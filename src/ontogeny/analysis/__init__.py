"""Analyses of recorded runs: transitions, per-example dynamics, grokking, seed statistics, solution types.

Each method is an estimator (`fit(...)` returns self, results in attributes ending in `_`) working on arrays or
DataFrames; `analyze(run)` runs those that fit a run and writes their tables into it.
"""

import importlib

from .analyze import ANALYSES, Analysis, analyze

# The estimators import scipy and ruptures (0.7 s): loaded on first use, so `ontogeny run` does not pay for them.
_LAZY = {"VarianceDecomposition": "bootstrap", "compare": "bootstrap", "multibootstrap": "bootstrap",
         "compare_runs": "compare",
         "ExampleDynamics": "dynamics", "GrokkingAnalysis": "grokking", "HiddenTransitions": "hidden",
         "SolutionTypes": "solutions", "TransitionDetector": "transitions"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ANALYSES",
    "Analysis",
    "ExampleDynamics",
    "GrokkingAnalysis",
    "HiddenTransitions",
    "SolutionTypes",
    "TransitionDetector",
    "VarianceDecomposition",
    "analyze",
    "compare",
    "compare_runs",
    "multibootstrap",
]


def __dir__() -> list[str]:
    return sorted(__all__)
