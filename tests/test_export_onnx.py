"""export_onnx.py: a student in ONNX Runtime gives PyTorch's outputs on padded batches of any size."""

from __future__ import annotations

import onnx
import pytest
import torch

from armhubert_training import export_onnx
from conftest import bundled_waveforms, pad_batch, tiny_config
from modeling_armhubert import ArmHubertForCTC, ArmHubertModel

ATOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 4-layer ARM student (T, F, T, F; reuse_mode probs), exported with its hidden states."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config(projection_dim=0, reuse_mode="probs")).eval()
    path = export_onnx.export_student(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", hidden_states=True)
    return model, path, export_onnx.onnx_session(path)


def _dims(value_info) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_inputs_and_outputs_have_dynamic_batch_and_length(exported):
    _, path, _ = exported
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_values", "attention_mask"]
    assert [o.name for o in graph.output] == ["last_hidden_state", "hidden_states"]
    values, mask = graph.input
    assert values.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert mask.type.tensor_type.elem_type == onnx.TensorProto.INT64
    # Both input axes symbolic, shared by the two inputs; outputs: symbolic batch and frames, fixed width.
    assert all(isinstance(d, str) and d for d in _dims(values))
    assert _dims(values) == _dims(mask)
    batch, frames, hidden = _dims(graph.output[0])
    assert batch == _dims(values)[0] and isinstance(frames, str) and hidden == 64
    assert _dims(graph.output[1])[0] == 5  # input of the encoder + 4 layers


def test_padded_speech_batch_matches_pytorch(exported):
    model, _, session = exported
    values, mask = pad_batch(bundled_waveforms(count=3))  # real utterances of different lengths
    assert (mask == 0).any()
    assert export_onnx.max_difference(model, session, values, mask, hidden_states=True) < ATOL


@pytest.mark.parametrize("lengths", [[12345], [7001, 400, 5000, 6999, 7001]], ids=["batch1", "batch5"])
def test_other_batch_sizes_and_lengths_match_pytorch(exported, lengths):
    """Batch sizes and lengths other than the export's (2 x 16000), down to one frame (400 samples)."""
    model, _, session = exported
    generator = torch.Generator().manual_seed(len(lengths))
    values, mask = pad_batch([torch.randn(n, generator=generator) for n in lengths])
    assert export_onnx.max_difference(model, session, values, mask, hidden_states=True) < ATOL


def test_an_item_gives_the_same_frames_alone_and_in_a_padded_batch(exported):
    _, _, session = exported
    waveforms = bundled_waveforms(count=2)
    values, mask = pad_batch(waveforms)
    batched = session.run(None, {"input_values": values.numpy(), "attention_mask": mask.numpy()})[0]
    short = min(range(2), key=lambda i: len(waveforms[i]))
    alone = session.run(None, {"input_values": waveforms[short][None].numpy(),
                               "attention_mask": torch.ones(1, len(waveforms[short]), dtype=torch.long).numpy()})[0]
    frames = alone.shape[1]
    assert frames < batched.shape[1]
    assert abs(batched[short, :frames] - alone[0]).max() < ATOL


def test_cli_exports_a_saved_ctc_model(tmp_path, offline_hf):
    """From a saved ArmHubertForCTC: logits, the fused attention path and the legacy double softmax."""
    torch.manual_seed(0)
    config = tiny_config(projection_dim=0, reuse_pattern=[True, True, True, False], reuse_mode="legacy_double_softmax",
                         vocab_size=12)
    ArmHubertForCTC(config).eval().save_pretrained(tmp_path / "ctc")
    output = tmp_path / "ctc.onnx"
    worst = export_onnx.main([str(output), "--model", str(tmp_path / "ctc")])
    assert worst is not None and worst < ATOL
    graph = onnx.load(str(output)).graph
    assert [o.name for o in graph.output] == ["logits"]
    assert _dims(graph.output[0])[2] == 12
