"""Analyses of recorded runs: transitions, per-example dynamics, grokking, seed statistics, solution types.

Each method is an estimator (`fit(...)` returns self, results in attributes ending in `_`) working on arrays or
DataFrames; `analyze(run)` runs those that fit a run and writes their tables into it.
"""

from .analyze import ANALYSES, Analysis, analyze
from .bootstrap import VarianceDecomposition, compare, multibootstrap
from .dynamics import ExampleDynamics
from .grokking import GrokkingAnalysis
from .hidden import HiddenTransitions
from .solutions import SolutionTypes
from .transitions import TransitionDetector

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
    "multibootstrap",
]
