"""The public API is exactly the curated names."""

import pytest

import ontogeny


def test_exported_names_are_exactly_the_intended_ones():
    assert ontogeny.__all__ == sorted(ontogeny.__all__)
    assert set(ontogeny.__all__) == {
        "MLPSpec", "ModularSpec", "MultitaskParitySpec", "OntogenyError", "OptimSpec", "ProbeSet", "RecordSpec",
        "Recorder", "ResumeError", "Run",
        "SparseParitySpec", "Spec", "SpecError", "StoreError", "TransformerSpec", "analysis", "ingest", "load_spec",
        "log_spaced", "open",
        "recipe_names", "run", "train_saes",
    }
    for name in ontogeny.__all__:
        assert getattr(ontogeny, name) is not None


def test_no_lazy_name_is_shadowed_by_a_submodule_imported_first():
    import subprocess
    import sys

    # importing a submodule binds its name on the package: a function of the same name would become the module
    code = ("import pkgutil, importlib, ontogeny as og\n"
            "for m in pkgutil.iter_modules(og.__path__): importlib.import_module('ontogeny.' + m.name)\n"
            "bad = [n for n, (_, attr) in og._LAZY.items() if attr and not callable(getattr(og, n)) and "
            "type(getattr(og, n)).__name__ == 'module']\n"
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_analysis_api():
    assert set(ontogeny.analysis.__all__) == {
        "ANALYSES", "Analysis", "ExampleDynamics", "GrokkingAnalysis", "HiddenTransitions", "SolutionTypes",
        "TransitionDetector", "VarianceDecomposition", "analyze", "compare", "compare_runs", "multibootstrap",
    }


def test_a_renamed_spec_class_says_its_new_name():
    with pytest.raises(AttributeError, match=r"ontogeny.ModularTask is now ontogeny.ModularSpec"):
        ontogeny.ModularTask
