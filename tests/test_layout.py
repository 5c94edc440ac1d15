"""The installed layout: the model and the scripts at the top level, everything else in the
armhubert_training package, and the files that travel with a saved model standalone."""

from __future__ import annotations

import ast
import configparser

from conftest import REPO

TOP_LEVEL = {"configuration_armhubert", "modeling_armhubert", "run_distill", "run_asr_ctc", "run_audio_classification",
             "run_query_by_example", "run_diarization", "run_speaker_verification"}
SCRIPTS = {name for name in TOP_LEVEL if name.startswith("run_")}
# Copied next to saved models and imported there as remote code, without this project installed.
TRAVELLING = ["configuration_armhubert.py", "modeling_armhubert.py", "armhubert_training/asr_pipeline.py",
              "armhubert_training/classification_pipeline.py", "armhubert_training/input_effects.py"]


def _imported_modules(path) -> set[str]:
    """Every module an `import` or `from` statement of the file names, wherever the statement is (in a
    function, under TYPE_CHECKING); relative ones with their leading dots."""
    return _imports_in(path.read_text())


def _imports_in(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names.add(module)
            if node.module is None:  # `from . import name`: the names are modules
                names.update(module + alias.name for alias in node.names)
    return names


def _imported_scripts(path) -> set[str]:
    return {name for name in _imported_modules(path) if name.lstrip(".").split(".")[0] in SCRIPTS}


def test_only_the_model_and_the_scripts_are_top_level_modules():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert set(config["options"]["py_modules"].split()) == TOP_LEVEL
    # Every package folder is listed (a subpackage left out would be missing from an installed copy).
    packages = sorted(".".join(init.parent.relative_to(REPO).parts)
                      for init in (REPO / "armhubert_training").rglob("__init__.py"))
    assert config["options"]["packages"].split() == packages == ["armhubert_training", "armhubert_training.corpora"]
    assert {p.stem for p in REPO.glob("*.py")} == TOP_LEVEL


def test_travelling_files_import_nothing_from_the_package():
    # The classification pipeline travels with asr_pipeline.py, whose file decoding it uses, and with
    # input_effects.py, SUPERB's input effects its model records.
    allowed_local = {".configuration_armhubert", "configuration_armhubert", ".asr_pipeline", ".input_effects"}
    for name in TRAVELLING:
        imported = _imported_modules(REPO / name)
        assert not any(m.split(".")[0] == "armhubert_training" for m in imported), name
        assert not {m for m in imported if m.startswith(".")} - allowed_local, name
        local = {m for m in imported if (REPO / f"{m.lstrip('.')}.py").is_file()}
        assert local <= allowed_local, (name, local)


def test_no_module_edits_the_import_path():
    needle = "sys." + "path"  # spelled apart so that this file does not match itself
    for path in REPO.rglob("*.py"):
        if {".venv", "build", ".git"} & set(path.relative_to(REPO).parts):
            continue
        assert needle not in path.read_text(), path


def test_no_module_imports_a_script():
    # Each script is an entry point: what scripts share lives in the package.
    modules = [path for folder in ("armhubert_training", "benchmarks", "tools")
               for path in (REPO / folder).rglob("*.py")]
    assert len(modules) > 20
    for path in [*modules, *(REPO / f"{script}.py" for script in SCRIPTS)]:
        assert not _imported_scripts(path), (path, _imported_scripts(path))


def test_imports_are_found_wherever_they_are():
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from run_asr_ctc import ModelArguments
def main():
    import run_distill as distill
from . import run_audio_classification
"""
    assert {"run_asr_ctc", "run_distill", ".run_audio_classification"} <= _imports_in(source)
