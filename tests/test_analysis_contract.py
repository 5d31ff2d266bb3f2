"""One contract for every analysis estimator: keyword-only constructor that only stores its arguments,
fit(...) returns self, fitted results end in an underscore, random_state kept as given."""

import ast
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ontogeny.analysis.bootstrap import VarianceDecomposition
from ontogeny.analysis.synthetic import synthetic_crossed
from ontogeny.analysis.dynamics import ExampleDynamics
from ontogeny.analysis.grokking import GrokkingAnalysis
from ontogeny.analysis.hidden import HiddenTransitions
from ontogeny.analysis.synthetic import synthetic_hidden
from ontogeny.analysis.solutions import SolutionTypes
from ontogeny.analysis.transitions import TransitionDetector
from ontogeny.analysis.synthetic import synthetic_curves


def transition_data():
    steps, values, _ = synthetic_curves(2, 80, random_state=0)
    return (steps, values), {}


def dynamics_data():
    steps, values, _ = synthetic_curves(5, 40, random_state=0)
    return (steps,), {"loss": np.abs(values), "correct": values > 0.5}


def hidden_data():
    steps, curves, _ = synthetic_hidden(6, 60, random_state=0)
    return (steps, curves), {}


def grokking_data():
    scalars = pd.DataFrame({"member": [0, 0, 1, 1], "step": [0, 10, 0, 10], "name": ["train/acc", "test/acc"] * 2,
                            "value": [1.0, 1.0, 1.0, 0.2]})
    return (scalars, pd.DataFrame({"member": [0, 1], "task.train_fraction": [0.3, 0.3]})), {}


def variance_data():
    return (synthetic_crossed(4, 3, 2, random_state=0), "outcome"), {}


def solutions_data():
    frame = pd.DataFrame({"member": range(8), "a": np.arange(8.0), "b": np.arange(8.0) ** 2})
    return (frame, ["a", "b"]), {}


CASES = [
    (TransitionDetector, transition_data),
    (ExampleDynamics, dynamics_data),
    (HiddenTransitions, hidden_data),
    (GrokkingAnalysis, grokking_data),
    (VarianceDecomposition, variance_data),
    (SolutionTypes, solutions_data),
]


@pytest.mark.parametrize("estimator, data", CASES, ids=[cls.__name__ for cls, _ in CASES])
def test_estimator_contract(estimator, data):
    parameters = inspect.signature(estimator.__init__).parameters
    names = [name for name in parameters if name != "self"]
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in names)
    with pytest.raises(TypeError):
        estimator(1)
    defaults = estimator()
    for name in names:  # stored as given, nothing computed in __init__
        assert getattr(defaults, name) is parameters[name].default
    assert not [key for key in vars(defaults) if key.endswith("_")]
    kwargs = {}
    if "random_state" in names:
        kwargs["random_state"] = np.random.default_rng(0)  # stored as given, not converted
    instance = estimator(**kwargs)
    if kwargs:
        assert instance.random_state is kwargs["random_state"]
    args, fit_kwargs = data()
    assert instance.fit(*args, **fit_kwargs) is instance
    fitted = [key for key in vars(instance) if key not in names]
    assert fitted and all(key.endswith("_") and not key.startswith("_") for key in fitted)


NUMERICAL_CORE = ["_common", "_mixture", "_sigmoid", "transitions", "dynamics", "hidden", "grokking", "bootstrap",
                  "solutions"]


@pytest.mark.parametrize("module", NUMERICAL_CORE)
def test_numerical_core_imports_nothing_outside_analysis(module):
    path = Path(importlib.util.find_spec(f"ontogeny.analysis.{module}").origin)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 1 or not (node.module or "").startswith("ontogeny"), node.module
            assert node.level <= 1, f"{module} imports from outside analysis: {node.module}"
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith(("ontogeny", "torch")) for alias in node.names)
