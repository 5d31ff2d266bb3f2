"""Rebuilding a run's members as models at a checkpoint (ontogeny.rebuild), and the layering it keeps."""

import ast
import pathlib

import pytest
import torch

import ontogeny as og
from ontogeny.analysis.components import run_components
from ontogeny.models import make_model
from ontogeny.rebuild import member_models, run_ensembles
from ontogeny.evaluation.probes import example_losses

SWEEP = ["task.p=23", "steps=60", "seeds=2", "record.weights_every=60", "sweep.model.width=[16,24]"]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    return og.run("grokking", overrides=SWEEP, out=tmp_path_factory.mktemp("rebuild") / "run")


def test_every_ensemble_of_a_sweep_is_rebuilt_with_its_own_shape_and_recorded_loss(sweep_run):
    recorded = sweep_run.scalars(name="test/loss").set_index(["member", "step"]).value
    seen = []
    for ensemble, step in member_models(sweep_run):
        seen.append((tuple(ensemble.ids), step))
        (split,) = [s for s in ensemble.task.eval_splits() if s.name == "test"]
        with torch.no_grad():
            loss, _ = example_losses(ensemble.task.loss, ensemble.model(split.x), split.y, with_correct=False)
        for index, member in enumerate(ensemble.ids):  # each member's own test examples
            own = loss[index][split.member_mask[index]]
            assert own.mean().item() == pytest.approx(recorded[member, step], rel=1e-5)
    assert seen == [((0, 1), 0), ((0, 1), 60), ((2, 3), 0), ((2, 3), 60)]
    importance, _ = run_components(sweep_run)  # built each grid point from the top-level spec: width 16 for both
    assert set(importance.member) == {0, 1, 2, 3}


def test_saes_train_on_every_ensemble_of_a_sweep(sweep_run, tmp_path):
    from ontogeny.sae import train_run_saes

    lines = []
    run = train_run_saes(sweep_run, tmp_path / "sae", seeds=2, steps=10, k=2, control=False, progress=lines.append)
    assert [line.split(":")[0] for line in lines] == ["step 60 (1/2)", "step 60 (2/2)"]  # one per ensemble x step
    assert "s so far" in lines[0] and "s left" in lines[1]
    members = run.members()
    assert sorted(set(members.source_member)) == [0, 1, 2, 3] and set(members.width) == {64, 96}  # 4x each width


def test_step_zero_is_the_init_seeds_model(sweep_run, monkeypatch):
    ensemble = next(run_ensembles(sweep_run))

    def loaded():
        ensemble.model = make_model(ensemble.members[0].spec.model, ensemble.task, [7, 8])  # other seeds
        ensemble.load(0)
        return [p.detach().clone() for p in ensemble.model.parameters()]

    saved = loaded()  # the weights saved at step 0
    checkpoints = sweep_run.checkpoints()
    monkeypatch.setattr(sweep_run, "checkpoints", lambda: checkpoints[checkpoints.step != 0])
    rebuilt = loaded()  # no weights at step 0: rebuilt from the init seeds
    assert all(torch.equal(a, b) for a, b in zip(saved, rebuilt))
    with pytest.raises(ValueError, match=r"members \[0, 1\] have no weights saved at step 45"):
        ensemble.load(45)


def test_runs_not_made_from_a_spec_cannot_be_rebuilt(scalar_run):
    import pandas as pd

    path = scalar_run("foreign", pd.DataFrame({"member": [0], "step": [0], "name": "test/loss", "value": [1.0]}))
    with pytest.raises(ValueError, match="made by 'synthetic', not `ontogeny run`"):
        next(run_ensembles(og.open(path)))


LOWER = ("analysis", "sae", "report", "store", "models", "tasks", "evaluation", "members.py", "rebuild.py")


def test_analysis_and_the_layers_below_training_import_nothing_from_it():
    root = pathlib.Path(og.__file__).parent
    offenders = []
    for part in LOWER:
        for path in [root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py")):
            package = ".".join(("ontogeny", *path.relative_to(root).parent.parts))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                    name = ".".join([*base, node.module or ""]) if node.level else node.module
                elif isinstance(node, ast.Import):
                    name = " ".join(alias.name for alias in node.names)
                else:
                    continue
                if "ontogeny.train" in name:
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders


# Run.model(member, step) is a convenience of the store's reader that calls ontogeny.rebuild when asked: the one
# dependency that points up, deferred to the call
DEFERRED_UP = {("ontogeny.store.run", "ontogeny.rebuild")}


def test_the_import_graph_has_no_cycle():
    """Every import of every ontogeny module, those inside functions included (a deferred import hides a cycle, it
    does not remove it), but not those for type annotations only."""
    import graphlib

    root = pathlib.Path(og.__file__).parent
    modules = {".".join(("ontogeny", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.dump(block.test) for n in ast.walk(block)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                name = ".".join([*base, node.module] if node.module else base)
                # `from . import data` imports the submodule, not the package's __init__
                names = [f"{name}.{a.name}" if f"{name}.{a.name}" in modules else name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            targets.update(n for n in names if n in modules and n != module and (module, n) not in DEFERRED_UP)
        graph[module] = targets
    graphlib.TopologicalSorter(graph).prepare()  # CycleError names the modules of a cycle


def test_only_the_store_imports_the_stores_modules():
    """Producers, readers and reports use what `ontogeny.store` exports, never its modules (create, layout, lock...)."""
    root = pathlib.Path(og.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.is_relative_to(root / "store"):
            continue
        package = ".".join(("ontogeny", *path.relative_to(root).parent.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                name = ".".join([*base, node.module])
                if name.startswith("ontogeny.store."):
                    offenders.append(f"{path.relative_to(root)}: {name}")
    assert not offenders
