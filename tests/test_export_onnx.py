"""export_onnx.py: a student in ONNX Runtime gives PyTorch's outputs on padded batches of any size, and its
int8 version stays within the stated bound of them, or the export refuses it."""

from __future__ import annotations

import copy
import shutil
from collections import Counter

import onnx
import pytest
import torch

from armhubert_training import export_onnx, quantization
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


def test_the_exported_attention_adds_its_key_mask_and_reuses_probabilities(exported):
    """An additive mask: no Where over the scores and no NaN guard after the softmax, in any layer
    (what is left of Where is the zeroing of padded frames before the positional conv, and its mask).
    A reuse layer applies the probabilities of the normal layer before it: a softmax and a Q Kᵀ product
    in the normal layers only."""
    model, path, _ = exported
    graph = onnx.load(str(path)).graph
    ops = Counter(node.op_type for node in graph.node)
    normal = sum(model.config.reuse_pattern)
    assert normal == 2 and len(model.config.reuse_pattern) == 4
    assert ops["Softmax"] == normal and ops["IsNaN"] == 0 and ops["Where"] <= 2
    # Products of two activations (no constant weight): Q Kᵀ and P V per normal layer, P V per reuse layer.
    weights = {init.name for init in graph.initializer}
    activation_products = [n for n in graph.node if n.op_type == "MatMul" and not set(n.input) & weights]
    assert len(activation_products) == 2 * normal + (4 - normal)


def test_onnx_session_leaves_out_the_slow_rewrites(exported, tmp_path):
    """`onnx_session` leaves out SkipLayerNormFusion, whose name ONNX Runtime would ignore silently if it
    were wrong: in the graph ONNX Runtime runs, its nodes are there with a plain session and not with
    `onnx_session`'s."""
    import onnxruntime

    _, path, _ = exported
    export_onnx.onnx_session(path, optimized_model_filepath=str(tmp_path / "session.onnx"))
    optimised = onnx.load(str(tmp_path / "session.onnx")).graph
    assert not [n for n in optimised.node if n.op_type == "SkipLayerNormalization"]
    assert [n for n in optimised.node if n.op_type == "LayerNormalization"]
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "plain.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = onnx.load(options.optimized_model_filepath).graph
    assert [n for n in fused.node if n.op_type == "SkipLayerNormalization"]


def test_padded_speech_batch_matches_pytorch(exported):
    model, _, session = exported
    values, mask = pad_batch(bundled_waveforms(count=3))  # real utterances of different lengths
    assert (mask == 0).any()
    assert export_onnx.max_difference(model, session, values, mask, hidden_states=True) < ATOL


@pytest.mark.parametrize("lengths", [[12345], [7001, 400, 5000, 6999, 7001], [400]],
                         ids=["batch1", "batch5", "one_frame"])
def test_other_batch_sizes_and_lengths_match_pytorch(exported, lengths):
    """Batch sizes and lengths other than the export's (2 x 16000), down to one frame (400 samples), which
    the export's length range leaves out."""
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


# -- int8 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_exported(exported, tmp_path_factory):
    """The fp32 export above, quantised to int8 by ONNX Runtime's dynamic quantisation."""
    model, path, _ = exported
    int8_path = quantization.quantize_onnx_int8(path, tmp_path_factory.mktemp("int8") / "tiny.int8.onnx")
    return model, int8_path, export_onnx.onnx_session(int8_path)


def test_int8_graph_has_the_fp32_interface_and_int8_linear_layers(exported, int8_exported):
    fp32, int8 = onnx.load(str(exported[1])), onnx.load(str(int8_exported[1]))
    for ours, theirs in ((int8.graph.input, fp32.graph.input), (int8.graph.output, fp32.graph.output)):
        assert [(v.name, v.type.tensor_type.elem_type, _dims(v)) for v in ours] == \
            [(v.name, v.type.tensor_type.elem_type, _dims(v)) for v in theirs]
    ops = Counter(node.op_type for node in int8.graph.node)
    # 2 normal layers x (q, k, v, out, 2 FFN) + 2 reuse layers x (v, out, 2 FFN) = 20 Linear layers, all int8.
    assert len(quantization.linear_layer_nodes(fp32)) == 20
    assert ops["MatMulInteger"] == 20 and not quantization.linear_layer_nodes(int8)
    # The attention products of two activations, the convs and the norms stay fp32.
    fp32_ops = Counter(node.op_type for node in fp32.graph.node)
    assert ops["MatMul"] == fp32_ops["MatMul"] - 20
    for op in ("Conv", "LayerNormalization"):
        assert ops[op] == fp32_ops[op] > 0
    assert int8_exported[1].stat().st_size < 0.75 * exported[1].stat().st_size


def test_int8_on_padded_speech_stays_within_the_bound(int8_exported):
    model, _, session = int8_exported
    values, mask = pad_batch(bundled_waveforms(count=3))
    assert (mask == 0).any()
    errors = export_onnx.int8_errors(model, session, values, mask, hidden_states=True)
    assert [e.name for e in errors] == ["last_hidden_state"] + [f"hidden_states[{i}]" for i in range(5)]
    # The conv encoder's output is fp32 all the way (as close as the fp32 export); the layers are int8.
    assert errors[1].relative_error < 1e-4
    assert 10 * errors[1].relative_error < errors[-1].relative_error < quantization.DEFAULT_MAX_RELATIVE_ERROR
    assert min(e.cosine for e in errors) > 0.999


@pytest.mark.parametrize("lengths", [[12345], [7001, 400, 5000, 6999]], ids=["batch1", "batch4"])
def test_int8_other_batch_sizes_and_lengths(int8_exported, lengths):
    model, _, session = int8_exported
    generator = torch.Generator().manual_seed(len(lengths))
    values, mask = pad_batch([0.1 * torch.randn(n, generator=generator) for n in lengths])
    errors = export_onnx.int8_errors(model, session, values, mask, hidden_states=True)
    assert max(e.relative_error for e in errors) < quantization.DEFAULT_MAX_RELATIVE_ERROR


def test_int8_keeps_chosen_linear_layers_in_fp32(exported, tmp_path):
    path = quantization.quantize_onnx_int8(exported[1], tmp_path / "keep.int8.onnx", keep_fp32=[r"layers\.3\."])
    kept = quantization.linear_layer_nodes(onnx.load(str(path)))
    assert sorted(kept.values()) == sorted(f"encoder.layers.3.{m}" for m in (
        "attention.v_proj", "attention.out_proj", "feed_forward.intermediate_dense", "feed_forward.output_dense"))
    with pytest.raises(ValueError, match="No layer matches"):
        quantization.quantize_onnx_int8(exported[1], tmp_path / "none.int8.onnx", keep_fp32=["no_such_layer"])


@pytest.fixture(scope="module")
def conv_int8_exported(exported, tmp_path_factory):
    """The student of `exported`, written with its convs as matrix products, and that quantised to int8."""
    model = exported[0]
    folder = tmp_path_factory.mktemp("convs_as_matmul")
    path = export_onnx.export_student(model, folder / "tiny.onnx", hidden_states=True, convs_as_matmul=True)
    int8_path = quantization.quantize_onnx_int8(path, folder / "tiny.int8.onnx")
    return model, path, int8_path


def test_convs_as_matmul_export_matches_pytorch_and_leaves_the_model_as_it_was(exported, conv_int8_exported):
    model, path, _ = conv_int8_exported
    graph = onnx.load(str(path)).graph
    # The waveform conv and the positional conv stay Conv nodes; every other conv layer is one product with
    # a constant weight.
    assert Counter(node.op_type for node in graph.node)["Conv"] == 2
    conv_modules = [m for m in quantization.linear_layer_nodes(onnx.load(str(path))).values() if "conv_layers" in m]
    assert sorted(conv_modules) == [f"feature_extractor.conv_layers.{i}" for i in range(1, len(model.config.conv_dim))]
    assert not model.feature_extractor.convs_as_matmul  # the export's switch is put back
    session = export_onnx.onnx_session(path)
    for lengths in ([12345], [7001, 400, 5000, 6999]):
        generator = torch.Generator().manual_seed(len(lengths))
        values, mask = pad_batch([torch.randn(n, generator=generator) for n in lengths])
        assert export_onnx.max_difference(model, session, values, mask, hidden_states=True) < ATOL


def test_int8_conv_encoder_quantises_every_conv_but_the_waveform_one(conv_int8_exported):
    model, _, int8_path = conv_int8_exported
    int8 = onnx.load(str(int8_path))
    assert not quantization.linear_layer_nodes(int8)  # every product with a constant weight is int8
    ops = Counter(node.op_type for node in int8.graph.node)
    assert ops["Conv"] == 2 and ops["MatMulInteger"] == 20 + len(model.config.conv_dim) - 1
    # The conv layers' weights are unsigned (no 16-bit overflow on CPUs without VNNI), the Linear layers' signed.
    weight_types = {init.name: init.data_type for init in int8.graph.initializer}
    products = Counter(onnx.TensorProto.DataType.Name(weight_types[node.input[1]])
                       for node in int8.graph.node if node.op_type == "MatMulInteger")
    assert products == {"INT8": 20, "UINT8": len(model.config.conv_dim) - 1}
    # On speech the int8 conv encoder stays within the bound; its error is larger than fp32 convs give.
    values, mask = pad_batch(bundled_waveforms(count=3))
    errors = export_onnx.int8_errors(model, export_onnx.onnx_session(int8_path), values, mask, hidden_states=True)
    assert 1e-3 < errors[1].relative_error  # the encoder input now carries int8 error
    assert max(e.relative_error for e in errors) < quantization.DEFAULT_MAX_RELATIVE_ERROR


def test_cli_int8_conv_encoder(exported, tmp_path, offline_hf):
    exported[0].save_pretrained(tmp_path / "student")
    output = tmp_path / "student.onnx"
    errors = export_onnx.main([str(output), "--model", str(tmp_path / "student"), "--quantize", "int8",
                               "--int8-conv-encoder", "--hidden-states", "--no-check"])
    assert max(e.relative_error for e in errors) < quantization.DEFAULT_MAX_RELATIVE_ERROR
    # The fp32 file keeps its Conv nodes (faster in fp32); the int8 one has integer conv layers.
    assert Counter(n.op_type for n in onnx.load(str(output)).graph.node)["Conv"] == len(tiny_config().conv_dim) + 1
    int8 = onnx.load(str(export_onnx.int8_path_for(output)))
    assert Counter(n.op_type for n in int8.graph.node)["Conv"] == 2
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "student", output, export_onnx.int8_path_for(output)])


def test_output_errors_are_measured_on_real_frames_only():
    reference = torch.tensor([[[3.0, 4.0], [1.0, 0.0]], [[0.0, 2.0], [5.0, 5.0]]])  # (B=2, T=2, H=2)
    output = reference.clone()
    output[0, 0] = torch.tensor([4.0, 3.0])  # cosine 24/25, |difference| = sqrt(2)
    output[1, 1] = 1e6  # a padded frame
    real = torch.tensor([[True, True], [True, False]])
    (error,) = quantization.output_errors(["x"], [reference], [output], real)
    assert error.cosine == pytest.approx((24 / 25 + 1 + 1) / 3)
    assert error.relative_error == pytest.approx(2 ** 0.5 / (25 + 1 + 4) ** 0.5)


def test_int8_export_refuses_a_model_that_quantisation_breaks(tmp_path, offline_hf):
    """Feed-forward layers that dominate the output, each with one large weight: that weight sets the layer's
    per-tensor int8 scale, which rounds the layer's other weights to 0."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config(projection_dim=0)).eval()
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.feed_forward.intermediate_dense.weight.mul_(50.0)[0, 0] = 1000.0
    model.save_pretrained(tmp_path / "broken")
    output = tmp_path / "broken.onnx"
    argv = [str(output), "--model", str(tmp_path / "broken"), "--quantize", "int8", "--no-check"]
    with pytest.raises(SystemExit, match="relative error of .* > --int8-max-error 0.05"):
        export_onnx.main(argv)
    assert output.exists() and not export_onnx.int8_path_for(output).exists()
    # --accept-int8-error keeps the model and reports the same error.
    int8_path = quantization.quantize_onnx_int8(output, export_onnx.int8_path_for(output))
    args = export_onnx.parse_args(argv + ["--accept-int8-error"])
    errors = export_onnx.check_int8(model, int8_path, args, export_onnx.int8_check_batch(args, model.config))
    assert int8_path.exists() and max(e.relative_error for e in errors) > 0.05


# -- broken models and inputs --------------------------------------------------------------------


def test_export_refuses_a_model_with_non_finite_weights(tmp_path, offline_hf):
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config(projection_dim=0)).eval()
    with torch.no_grad():
        model.encoder.layers[2].feed_forward.output_dense.weight[3, 5] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    output = tmp_path / "nan.onnx"
    with pytest.raises(SystemExit, match=r"non-finite .*encoder\.layers\.2\.feed_forward\.output_dense\.weight"):
        export_onnx.main([str(output), "--model", str(tmp_path / "nan"), "--quantize", "int8"])
    assert not output.exists() and not export_onnx.int8_path_for(output).exists()


class _NaNSession:
    """An ONNX Runtime session whose outputs get a NaN on the first real frame."""

    def __init__(self, session):
        self.session = session

    def run(self, names, feeds):
        outputs = self.session.run(names, feeds)
        for output in outputs:
            output[..., 0, 0, 0] = float("nan")  # batch item 0, frame 0: real
        return outputs


def test_the_checks_fail_on_non_finite_outputs(exported, tmp_path):
    """NaN compares as neither larger nor smaller, so a NaN output must be caught before the largest difference."""
    model, path, session = exported
    first, second = bundled_waveforms(count=2)
    values, mask = pad_batch([first[:16000], second[:12000]])
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.encoder.layers[3].feed_forward.output_dense.bias[7] = float("nan")
    with pytest.raises(ValueError, match=r"PyTorch's last_hidden_state has \d+ NaN"):
        export_onnx.max_difference(broken, session, values, mask, hidden_states=True)
    with pytest.raises(ValueError, match="ONNX Runtime's last_hidden_state has 1 NaN"):
        export_onnx.max_difference(model, _NaNSession(session), values, mask, hidden_states=True)
    with pytest.raises(ValueError, match="ONNX Runtime's last_hidden_state"):
        export_onnx.int8_errors(model, _NaNSession(session), values, mask, hidden_states=True)
    # Finite weights, infinite outputs (the last layer norm overflows float32): the script's check removes the file.
    with torch.no_grad():
        broken.encoder.layers[3].feed_forward.output_dense.bias.zero_()
        broken.encoder.layers[3].final_layer_norm.weight.fill_(3e38)
    assert not export_onnx.non_finite_weights(broken)
    output = tmp_path / "overflow.onnx"
    shutil.copy(path, output)
    args = export_onnx.parse_args([str(output), "--model", "unused", "--hidden-states"])
    with pytest.raises(SystemExit, match=r"PyTorch's last_hidden_state has 0 NaN and \d+ infinite"):
        export_onnx.check_fp32(broken, output, args)
    assert not output.exists()


def test_int8_check_audio_is_read_before_exporting(tmp_path, offline_hf):
    torch.manual_seed(0)
    ArmHubertModel(tiny_config(projection_dim=0)).eval().save_pretrained(tmp_path / "student")
    output = tmp_path / "student.onnx"
    with pytest.raises(SystemExit, match=r"--int8-check-audio: .*missing\.wav"):
        export_onnx.main([str(output), "--model", str(tmp_path / "student"), "--quantize", "int8",
                          "--int8-check-audio", str(tmp_path / "missing.wav")])
    assert not output.exists() and not export_onnx.int8_path_for(output).exists()
    # The int8 options without --quantize int8 would be silently ignored: refused instead.
    with pytest.raises(SystemExit):
        export_onnx.main([str(output), "--model", str(tmp_path / "student"), "--int8-conv-encoder"])
    assert not output.exists()


def test_an_int8_model_whose_check_breaks_is_removed(exported, tmp_path, monkeypatch):
    model, path, _ = exported
    output = tmp_path / "tiny.onnx"
    shutil.copy(path, output)
    args = export_onnx.parse_args([str(output), "--model", "unused", "--quantize", "int8"])

    def fail(*args, **kwargs):
        raise RuntimeError("the check broke")

    monkeypatch.setattr(export_onnx, "int8_errors", fail)
    with pytest.raises(RuntimeError, match="the check broke"):
        export_onnx.write_int8(model, output, args, export_onnx.int8_check_batch(args, model.config))
    assert output.exists() and not export_onnx.int8_path_for(output).exists()
