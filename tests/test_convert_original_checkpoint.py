"""convert_original_checkpoint.py on checkpoints written by the authors' own code: the converted
model reproduces their per-layer outputs, alone and in a padded batch."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel

from conftest import FIXTURES, pad_batch
from armhubert_training.arguments import AsrModelArguments
from armhubert_training.convert_original_checkpoint import main as convert_main
from armhubert_training.convert_original_checkpoint import parse_python_literal

TOLERANCE = 1e-4  # absolute, fp32


def _convert(tmp_path, name: str, *extra: str):
    output_dir = tmp_path / name
    convert_main(["--checkpoint", str(FIXTURES / f"{name}.ckpt"), "--output_dir", str(output_dir), *extra])
    return output_dir


@pytest.mark.parametrize("name", ["tiny-armhubert", "tiny-maskhubert"])
@pytest.mark.parametrize("config_source", ["checkpoint", "yaml"])
def test_converted_checkpoint_reproduces_the_authors_outputs(tmp_path, offline_hf, name, config_source):
    extra = ["--config", str(FIXTURES / f"{name}.yaml")] if config_source == "yaml" else []
    output_dir = _convert(tmp_path, name, *extra)
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    reference = torch.load(FIXTURES / f"{name}.reference.pt")
    values, mask = pad_batch(reference["inputs"])
    with torch.no_grad():
        batched = model(values, attention_mask=mask, output_hidden_states=True)
        for b, (waveform, single) in enumerate(zip(reference["inputs"], reference["single"])):
            alone = model(waveform[None], output_hidden_states=True)
            num_layers = len(single["layer_hidden_states"])
            assert len(alone.hidden_states) == num_layers + 1
            frames = single["layer_hidden_states"][0].shape[1]
            for i in range(num_layers):
                for ours, theirs in ((alone.hidden_states[i + 1], single["layer_hidden_states"][i]),
                                     (alone.projected_hidden_states[i], single["projections"][i])):
                    assert ours.shape == theirs.shape
                    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOLERANCE)
                # The padded batch gives each item's single outputs (the authors' code does not).
                torch.testing.assert_close(batched.hidden_states[i + 1][b, :frames], single["layer_hidden_states"][i][0],
                                           rtol=0, atol=TOLERANCE)
                torch.testing.assert_close(batched.projected_hidden_states[i][b, :frames], single["projections"][i][0],
                                           rtol=0, atol=TOLERANCE)


def test_converted_directory_is_complete(tmp_path, offline_hf):
    output_dir = _convert(tmp_path, "tiny-armhubert")
    config = json.loads((output_dir / "config.json").read_text())
    assert config["model_type"] == "armhubert"
    assert config["reuse_mode"] == "legacy_double_softmax"
    assert config["reuse_pattern"] == [True, False, True, False]
    assert config["projection_dim"] == 128 and config["layer_grad_scale"] is True
    assert config["conv_dim"] == [32, 64, 64, 64, 64, 64, 96, 96, 96]
    extractor = AutoFeatureExtractor.from_pretrained(output_dir)
    assert extractor.sampling_rate == 16000 and not extractor.do_normalize and extractor.return_attention_mask


def test_probs_mode_differs_from_the_legacy_outputs(tmp_path, offline_hf):
    """The released checkpoints need the legacy double softmax: the paper's 'probs' reuse gives other outputs."""
    output_dir = _convert(tmp_path, "tiny-armhubert", "--reuse_mode", "probs")
    model = AutoModel.from_pretrained(output_dir, trust_remote_code=True).eval()
    reference = torch.load(FIXTURES / "tiny-armhubert.reference.pt")
    with torch.no_grad():
        out = model(reference["inputs"][0][None], output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[1], reference["single"][0]["layer_hidden_states"][0],
                               rtol=0, atol=TOLERANCE)  # layer 0 is a normal layer: same
    # Random weights give near-uniform maps, so the gap is small, but well beyond the tolerance.
    assert (out.hidden_states[2] - reference["single"][0]["layer_hidden_states"][1]).abs().max() > 5 * TOLERANCE


def _tampered_checkpoint(tmp_path, change) -> str:
    checkpoint = torch.load(FIXTURES / "tiny-armhubert.ckpt")
    change(checkpoint["state_dict"])
    path = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, path)
    return str(path)


@pytest.mark.parametrize("change, message", [
    (lambda sd: sd.pop("student_model.encoder.layers.1.fc1.weight"), "missing.*layers.1.feed_forward"),
    (lambda sd: sd.__setitem__("student_model.encoder.layers.1.self_attn.q_proj.weight", torch.zeros(96, 96)),
     "unexpected.*layers.1.attention.q_proj"),
    (lambda sd: sd.__setitem__("student_model.encoder.layers.0.fc1.weight", torch.zeros(7, 96)), "Shape mismatch"),
    (lambda sd: sd.__setitem__("optimizer_thing", torch.zeros(1)), "outside the student and teacher"),
])
def test_converter_refuses_mismatching_checkpoints(tmp_path, change, message):
    path = _tampered_checkpoint(tmp_path, change)
    with pytest.raises(ValueError, match=message):
        convert_main(["--checkpoint", path, "--output_dir", str(tmp_path / "out")])


def test_teacher_weights_are_ignored(tmp_path, offline_hf):
    def drop_teacher(state_dict):
        for key in [k for k in state_dict if k.startswith("teacher_model.")]:
            del state_dict[key]

    path = _tampered_checkpoint(tmp_path, drop_teacher)
    convert_main(["--checkpoint", path, "--output_dir", str(tmp_path / "no-teacher")])
    with_teacher = _convert(tmp_path, "tiny-armhubert")
    a = AutoModel.from_pretrained(tmp_path / "no-teacher", trust_remote_code=True).state_dict()
    b = AutoModel.from_pretrained(with_teacher, trust_remote_code=True).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _CreatesFileWhenUnpickled:
    """A pickle payload: unpickling it runs code (here, creating a file)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').close()",)


def test_checkpoint_carrying_code_is_refused_unless_trusted(tmp_path, offline_hf):
    from armhubert_training.student_source import resolve_source

    marker = tmp_path / "payload-ran"
    checkpoint = torch.load(FIXTURES / "tiny-armhubert.ckpt")
    checkpoint["callbacks"] = {"ModelCheckpoint": _CreatesFileWhenUnpickled(marker)}
    crafted = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, crafted)

    with pytest.raises(ValueError, match=r"crafted\.ckpt holds objects beyond tensors and plain data.*"
                                         r"--trust_checkpoint.*Refused: Unsupported global: GLOBAL exec"):
        convert_main(["--checkpoint", str(crafted), "--output_dir", str(tmp_path / "out")])
    assert not marker.exists() and not (tmp_path / "out").exists()
    # run_asr_ctc.py converts a .ckpt through the same loader.
    with pytest.raises(ValueError, match="--trust_checkpoint"):
        resolve_source(AsrModelArguments(model_name_or_path=str(crafted), head="superb"),
                       str(tmp_path / "asr"))
    assert not marker.exists()

    # The explicit opt-in unpickles everything, the payload included: hence its warning.
    convert_main(["--checkpoint", str(crafted), "--output_dir", str(tmp_path / "trusted"), "--trust_checkpoint"])
    assert marker.exists()
    assert json.loads((tmp_path / "trusted" / "config.json").read_text())["reuse_pattern"] == [True, False, True, False]


def test_python_expressions_are_parsed_without_eval():
    assert parse_python_literal("[(512, 10, 5)] + [(512, 3, 2)] * 2", "x") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    assert parse_python_literal("[True, False] * 2", "x") == [True, False, True, False]
    assert parse_python_literal([1, 2], "x") == [1, 2]
    with pytest.raises(ValueError, match="only literals"):
        parse_python_literal("__import__('os').getcwd()", "conv_feature_layers")
