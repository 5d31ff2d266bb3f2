"""A recipe's `source` and `differs` are exactly true, setting by setting, where it records its source's settings."""

import pytest

from ontogeny.spec import RECIPES_DIR, load_spec, recipe_fidelity, recipe_names


def named_in(key: str, ours, text: str) -> bool:
    """Whether `differs` names the setting `key` ("optim.weight_decay": "weight decay" or "weight_decay") or
    this recipe's value of it (optim.name: "AdamW")."""
    last, text = key.rsplit(".", 1)[-1].lower(), text.lower()
    return last in text or last.replace("_", " ") in text or str(ours).lower() in text


@pytest.mark.parametrize("name", recipe_names())
def test_every_setting_that_differs_from_the_source_is_named_and_no_other_is_claimed_equal(name):
    spec = load_spec(name, check_machine=False)
    assert spec.source and spec.differs
    for key, paper, ours in recipe_fidelity(name):
        if paper != ours:
            assert named_in(key, ours, spec.differs), f"{name}: {key} is {ours!r}, the source's {paper!r}; not in differs"
    if spec.differs.lower().startswith("none"):
        assert all(paper == ours for _, paper, ours in recipe_fidelity(name)), name


def test_the_checked_recipes_record_their_sources_settings():
    assert {key for key, _, _ in recipe_fidelity("grokking-nanda")} >= {"task.p", "optim.lr", "model.d_mlp", "steps"}
    nanda = {key: (paper, ours) for key, paper, ours in recipe_fidelity("grokking-nanda")}
    assert nanda["steps"] == (50000, 40000) and nanda["optim.betas"] == ([0.9, 0.98], [0.9, 0.98])
    grokking = {key: (paper, ours) for key, paper, ours in recipe_fidelity("grokking")}
    assert grokking["optim.name"] == ("sgd", "adamw")  # Gromov: vanilla gradient descent
    assert "paper" not in load_spec("grokking").to_dict()  # the record is no setting
    assert (RECIPES_DIR / "grokking.toml").read_text().count("[paper]") == 1
