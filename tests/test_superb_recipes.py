"""Every SUPERB recipe in configs/ carries SUPERB's downstream values (configs/superb/protocol.yaml)."""

from __future__ import annotations

import math

import pytest
import yaml

from conftest import REPO

CONFIGS = REPO / "configs" / "superb"
PROTOCOL = yaml.safe_load((CONFIGS / "protocol.yaml").read_text())
RECIPES = sorted(path.name for path in CONFIGS.glob("*.yaml") if path.name != "protocol.yaml")


def recipe_value(recipe: dict, key: str):
    if key == "effective_batch":
        return recipe["per_device_train_batch_size"] * recipe.get("gradient_accumulation_steps", 1)
    if key not in recipe:
        raise AssertionError(f"the recipe has no `{key}`")
    return recipe[key]


def same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def expected_values(recipe_name: str) -> dict:
    tasks = [task for task, entry in PROTOCOL.items() if recipe_name in entry["recipes"]]
    assert len(tasks) == 1, f"{recipe_name} must be listed under exactly one task of protocol.yaml: {tasks}"
    entry = PROTOCOL[tasks[0]]
    values = dict(entry["settings"])
    values.update((entry.get("variants") or {}).get(recipe_name, {}))
    return values


def test_every_protocol_entry_cites_a_source_and_names_existing_recipes():
    for task, entry in PROTOCOL.items():
        assert entry["recipes"], task
        for name in entry["recipes"]:
            assert (CONFIGS / name).is_file(), f"{task}: {name} does not exist"
        for variant in entry.get("variants") or {}:
            assert variant in entry["recipes"], f"{task}: variant {variant} is not one of its recipes"
        rows = list(entry["settings"].items()) + [
            row for changes in (entry.get("variants") or {}).values() for row in changes.items()]
        for key, row in rows:
            assert isinstance(row, list) and len(row) == 2 and isinstance(row[1], str) and row[1], (
                f"{task}.{key} must be [value, source]")


@pytest.mark.parametrize("recipe_name", RECIPES)
def test_recipe_follows_superb(recipe_name):
    recipe = yaml.safe_load((CONFIGS / recipe_name).read_text())
    wrong = {}
    for key, (value, source) in expected_values(recipe_name).items():
        got = recipe_value(recipe, key)
        if not same(got, value):
            wrong[key] = f"recipe {got!r}, SUPERB {value!r} ({source})"
    assert not wrong, f"{recipe_name} drifts from SUPERB: {wrong}"
