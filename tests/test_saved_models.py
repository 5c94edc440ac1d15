"""Model folders saved by an earlier version still load, and give the outputs they gave when saved.

tests/fixtures/saved-<version>*/ hold tiny folders written by tools/make_saved_model_fixture.py (a bare
student with distillation heads, CTC models with each head, classifiers in each mode; the x-vector and
diarization models, added later, in a fixture of their own) and reference.pt: a padded batch and each
model's outputs on it, computed when the folders were saved; the code files saved with every folder are
kept once per fixture, in code/.
Each folder must load with this checkout's classes, with the Auto classes (this checkout's
registered classes), and with the Auto classes and the code saved in the folder (trust_remote_code,
in a fresh process that cannot import the repository), and give the reference outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import (AutoModel, AutoModelForAudioClassification, AutoModelForAudioFrameClassification,
                          AutoModelForAudioXVector, AutoModelForCTC)

import modeling_armhubert
from conftest import REPO
from tools.make_saved_model_fixture import CLASSES, CODE_FILES, CODE_FOLDER, model_outputs

VERSIONS = sorted(path.name for path in (REPO / "tests" / "fixtures").glob("saved-v*"))
AUTO_CLASSES = {auto.__name__: auto for auto in (AutoModel, AutoModelForAudioClassification,
                                                   AutoModelForAudioFrameClassification, AutoModelForAudioXVector,
                                                   AutoModelForCTC)}
# Same weights, same inputs, same arithmetic: any difference beyond float round-off is a change of the model.
# Round-off depends on the CPU's kernels (AVX2 and AVX-512 ones sum in other orders: 1.1e-6 seen), so fp32's 1e-5.
TOLERANCE = dict(rtol=0.0, atol=1e-5)


def _folders(version: str) -> dict[str, tuple[str, str]]:
    """folder -> (class it was saved from, Auto class that loads it)."""
    return json.loads((REPO / "tests" / "fixtures" / version / "folders.json").read_text())


def _reference(version: str) -> dict:
    return torch.load(REPO / "tests" / "fixtures" / version / "reference.pt")


CASES = [(version, folder) for version in VERSIONS for folder in _folders(version)]


def _assert_reference_outputs(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], where: str) -> None:
    assert got.keys() == want.keys(), where
    for name in want:
        torch.testing.assert_close(got[name], want[name], **TOLERANCE, msg=lambda m: f"{where} {name}: {m}")


def test_there_is_a_fixture_of_every_saved_kind():
    assert VERSIONS, "tests/fixtures/saved-v* is missing: run tools/make_saved_model_fixture.py"
    saved = {class_name for version in VERSIONS for class_name, _ in _folders(version).values()}
    assert saved == set(CLASSES), "a model class without a saved folder: run tools/make_saved_model_fixture.py"
    public = {name for name in modeling_armhubert.__all__ if isinstance(getattr(modeling_armhubert, name), type)
              and issubclass(getattr(modeling_armhubert, name), modeling_armhubert.ArmHubertPreTrainedModel)}
    assert public - {"ArmHubertPreTrainedModel"} == set(CLASSES), "add the new model class to the fixture tool"


@pytest.mark.parametrize(("version", "folder"), CASES)
def test_saved_folder_loads_with_its_class_and_gives_the_same_outputs(version, folder):
    class_name, _ = _folders(version)[folder]
    reference = _reference(version)
    model, info = CLASSES[class_name].from_pretrained(REPO / "tests" / "fixtures" / version / folder,
                                                      output_loading_info=True)
    # Every weight in the folder is used and every parameter of the model comes from it.
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    got = model_outputs(model, reference["input_values"], reference["attention_mask"])
    _assert_reference_outputs(got, reference["outputs"][folder], f"{version}/{folder}")


@pytest.mark.parametrize(("version", "folder"), CASES)
def test_saved_folder_loads_with_its_auto_class_and_this_checkouts_code(version, folder):
    class_name, auto_name = _folders(version)[folder]
    reference = _reference(version)
    model = AUTO_CLASSES[auto_name].from_pretrained(REPO / "tests" / "fixtures" / version / folder,
                                                    trust_remote_code=False)
    assert type(model) is CLASSES[class_name]
    got = model_outputs(model, reference["input_values"], reference["attention_mask"])
    _assert_reference_outputs(got, reference["outputs"][folder], f"{version}/{folder}")


FRESH_PROCESS_LOAD = r"""
import json, sys, torch
import transformers
fixture, outputs_file = sys.argv[1:]
folders = json.load(open(f"{fixture}/folders.json"))
reference = torch.load(f"{fixture}/reference.pt")
outputs = {}
for folder, (class_name, auto_name) in folders.items():
    model = getattr(transformers, auto_name).from_pretrained(f"{fixture}/{folder}", trust_remote_code=True).eval()
    assert type(model).__name__ == class_name, (folder, type(model))
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        out = model(reference["input_values"], attention_mask=reference["attention_mask"], output_hidden_states=True)
    outputs[folder] = {"first": out[0]}
    if getattr(out, "embeddings", None) is not None:
        outputs[folder]["embeddings"] = out.embeddings
    if getattr(out, "projected_hidden_states", None) is not None:
        outputs[folder]["hidden_states"] = torch.stack(out.hidden_states)
        outputs[folder]["projected_hidden_states"] = torch.stack(out.projected_hidden_states)
assert "modeling_armhubert" not in sys.modules, "the repository's module must not be imported"
torch.save(outputs, outputs_file)
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_saved_folders_load_with_auto_classes_and_their_own_code(version, tmp_path):
    """What a user of a saved model gets: Transformers and the folder, nothing of this repository."""
    # The folders as saved: the code files, kept once in the fixture's code/, back in every folder.
    fixture = tmp_path / version
    shutil.copytree(REPO / "tests" / "fixtures" / version, fixture)
    for folder in _folders(version):
        for name in CODE_FILES:
            shutil.copy(fixture / CODE_FOLDER / name, fixture / folder / name)
    outputs_file = tmp_path / "outputs.pt"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")  # remote code is copied into HF_HOME
    subprocess.run([sys.executable, "-c", FRESH_PROCESS_LOAD, str(fixture), str(outputs_file)], cwd=tmp_path,
                   env=env, check=True, timeout=300)
    got, reference = torch.load(outputs_file), _reference(version)
    for folder in _folders(version):
        _assert_reference_outputs(got[folder], reference["outputs"][folder], f"{version}/{folder} (own code)")
