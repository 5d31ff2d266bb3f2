"""Specs: recipes load, overrides apply, bad input is refused with one line naming file and key."""

import pytest

from ontogeny.exceptions import SpecError
from ontogeny import MLPSpec, ModularSpec
from ontogeny.spec import RECIPES_DIR, from_dict, load_spec, recipe_names


def test_every_recipe_loads_and_names_its_source():
    assert {"grokking", "grokking-nanda", "grokking-threshold", "sparse-parity", "multitask-parity"} <= set(
        recipe_names())
    for name in recipe_names():
        spec = load_spec(name)
        assert spec.source and spec.differs and spec.description


def test_overrides_and_seed_counts():
    spec = load_spec("grokking", ["task.p=23", "seeds=3", "optim.betas=[0.8, 0.9]", "model.activation=relu"])
    assert spec.task == ModularSpec(p=23, op="+", train_fraction=0.4, split_seed=0)
    assert spec.seeds == (0, 1, 2)
    assert spec.optim.betas == (0.8, 0.9)
    assert spec.model.activation == "relu"
    assert load_spec("grokking", {"seeds": [5, 7]}).seeds == (5, 7)


def test_toml_round_trip(tmp_path):
    spec = load_spec("grokking-threshold")
    path = tmp_path / "spec.toml"
    path.write_text(spec.to_toml())
    assert load_spec(path) == spec


def test_sweep_grid_in_declaration_order(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[sweep]\ntask.train_fraction = [0.2, 0.4]\noptim.weight_decay = [0.1, 1.0]\n")
    spec = load_spec(path)
    assert spec.grid() == [
        {"task.train_fraction": 0.2, "optim.weight_decay": 0.1},
        {"task.train_fraction": 0.2, "optim.weight_decay": 1.0},
        {"task.train_fraction": 0.4, "optim.weight_decay": 0.1},
        {"task.train_fraction": 0.4, "optim.weight_decay": 1.0},
    ]
    assert spec.at(spec.grid()[1]).optim.weight_decay == 1.0


def test_switching_the_model_by_override():
    spec = load_spec("grokking", ["model.name=transformer", "model.d_model=32", "model.n_heads=2"])
    assert spec.model.d_model == 32 and spec.model.n_heads == 2
    assert isinstance(load_spec("grokking").model, MLPSpec)


@pytest.mark.parametrize("text, key, words", [
    ("[task]\ntrain_fraction = 1.5\n", "task.train_fraction", "strictly between 0 and 1"),
    ("[task]\nop = '/'\np = 91\n", "task.p", "prime"),
    ("[task]\np = 2\n", "task.train_fraction", "leaves 1 train and 3 test examples of 4 (p = 2)"),
    ("[task]\ntrain_fraction = 1e-9\n", "task.train_fraction", "leaves 1 train and"),
    ("[task]\nbatch_size = 3000\n", "task.train_fraction", "the train split needs at least 3000 (a batch)"),
    ("[task]\nq = 3\n", "task.q", "unknown key"),
    ("[task]\np = 'seven'\n", "task.p", "must be int"),
    ("[model]\nname = 'rnn'\n", "model.name", "unknown model"),
    ("[optim]\nlr = -1\n", "optim.lr", "positive"),
    ("seeds = 100000\n[model]\nwidth = 10000000\n", "model", "GiB of memory"),
    ("[sweep]\ntask.train_fraction = [0.5, 2.0]\n", "sweep", "strictly between"),
    ("[sweep]\nseeds = [1, 2]\n", "sweep.seeds", "can be swept"),
    ("steps = \n", None, "invalid TOML"),
    # values that used to get through (every member then diverged) or crashed deep inside
    ("[optim]\nlr = inf\n", "optim.lr", "positive and finite"),
    ("[optim]\nlr = 1e400\n", "optim.lr", "positive and finite"),
    ("[model]\ninit_scale = inf\n", "model.init_scale", "positive and finite"),
    ("[optim]\neps = nan\n", "optim.eps", "positive and finite"),
    ("[optim]\neps = -1\n", "optim.eps", "positive and finite"),
    ("[optim]\nname = 'sgd'\nmomentum = -5\n", "optim.momentum", "[0, 1)"),
    ("seeds = 1000000000\n", "seeds", "between 1 and 100000"),
    ("steps = 100000000000000000000\n", "steps", "between 1 and"),
    ("steps = 100000000000\n", "record.every", "checkpoints"),
    ("[model]\nname = 'transformer'\nn_heads = 0\n", "model.n_heads", "at least 1"),
    ("[model]\nname = 'transformer'\nd_model = 0\n", "model.d_model", "at least 1"),
    ("name = 'a\\u0000b'\n", "name", "one safe path component"),
    ("name = '../up'\n", "name", "one safe path component"),
])
def test_bad_input_names_file_key_and_problem(tmp_path, text, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert words in message
    if key:
        assert info.value.key == key


def test_a_spec_path_that_is_a_directory_or_binary_is_one_line(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)))
    for path, words in ((tmp_path, "is a directory"), (binary, r"not a text \(UTF-8\) file")):
        with pytest.raises(SpecError, match=words) as info:
            load_spec(path)
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


def test_a_recipe_name_is_the_recipe_even_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    """`ontogeny run grokking --out grokking`, then `ontogeny run grokking` again from the same folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grokking").mkdir()
    assert load_spec("grokking") == load_spec(str(RECIPES_DIR / "grokking.toml"))
    with pytest.raises(SpecError, match="is a directory"):
        load_spec("./grokking/")  # a path that names the folder itself


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(SpecError, match="grokking"):
        load_spec("no-such-recipe")


def test_bad_override_value():
    with pytest.raises(SpecError, match="task.p"):
        load_spec("grokking", ["task.p=1"])
    with pytest.raises(SpecError, match="key=value"):
        load_spec("grokking", ["task.p"])
    with pytest.raises(SpecError, match="must be a table"):
        from_dict({"task": 3})


def test_cuda_is_checked_against_this_machine_but_not_when_reading_a_run(tmp_path):
    import torch

    path = tmp_path / "gpu.toml"
    path.write_text('device = "cuda"\n')
    if torch.cuda.is_available():
        assert load_spec(path).device == "cuda"
    else:
        with pytest.raises(SpecError, match="device: CUDA is not available on this machine"):
            load_spec(path)
    assert load_spec(path, check_machine=False).device == "cuda"  # a GPU run's spec still opens here


def test_overrides_are_named_in_the_description_and_differs():
    from ontogeny.spec import changed_keys

    spec = load_spec("grokking", ["optim.lr=0.003", "seeds=3"])
    assert spec.description.endswith("[changed here: optim.lr = 0.003; seeds = 3]")  # the recipe says "8 seeds"
    assert spec.differs.startswith("This run also differs from the recipe: optim.lr = 0.003; seeds = 3. Gromov")
    assert changed_keys(spec) == "optim.lr = 0.003; seeds = 3" and changed_keys(load_spec("grokking")) == ""
    assert load_spec("grokking", {"description": "mine", "seeds": 3}).description == "mine"
