"""The public API is exactly the curated names."""

import ontogeny


def test_exported_names_are_exactly_the_intended_ones():
    assert ontogeny.__all__ == sorted(ontogeny.__all__)
    assert set(ontogeny.__all__) == {
        "MLPModel", "ModularTask", "MultitaskParityTask", "OntogenyError", "Optim", "ProbeSet", "Record", "Recorder",
        "ResumeError", "Run",
        "SparseParityTask", "Spec", "SpecError", "StoreError", "TransformerModel", "analysis", "ingest", "load_spec",
        "log_spaced", "open",
        "recipe_names", "run", "train_saes",
    }
    for name in ontogeny.__all__:
        assert getattr(ontogeny, name) is not None


def test_analysis_api():
    assert set(ontogeny.analysis.__all__) == {
        "ANALYSES", "Analysis", "ExampleDynamics", "GrokkingAnalysis", "HiddenTransitions", "SolutionTypes",
        "TransitionDetector", "VarianceDecomposition", "analyze", "compare", "compare_runs", "multibootstrap",
    }
