"""ArmHubertModel / ArmHubertForCTC / ArmHubertForSuperbCTC: presets, attention map reusing, gradient
scaling, padding, input errors, Auto classes and remote-code loading, initialisation, attention
implementations, and a battery in the style of Transformers' model tests (round trips, output shapes,
batching, training)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModel, AutoModelForCTC

from conftest import REPO, bundled_waveforms, pad_batch, run_in_fresh_process, tiny_config
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import (
    ArmHubertAttention,
    ArmHubertConvLayer,
    ArmHubertForCTC,
    ArmHubertForSequenceClassification,
    ArmHubertForSuperbCTC,
    ArmHubertModel,
    ArmHubertPositionalConvEmbedding,
    conv_as_matmul,
)

# docs/method.md §1: exact parameter counts (with heads, without heads).
PARAMETER_COUNTS = {
    "armhubert": (26_448_448, 22_015_552),
    "armhubert-s": (22_394_080, 18_403_552),
    "armwavlm-s": (22_394_080, 18_403_552),
    "maskhubert": (26_635_840, 22_202_944),
}


@pytest.mark.parametrize("preset", sorted(PARAMETER_COUNTS))
def test_preset_parameter_counts(preset):
    with_heads, without_heads = PARAMETER_COUNTS[preset]
    assert ArmHubertModel(ArmHubertConfig.from_preset(preset)).num_parameters() == with_heads
    assert ArmHubertModel(ArmHubertConfig.from_preset(preset, projection_dim=0)).num_parameters() == without_heads


def test_starhubert_has_the_published_size_without_heads():
    # STaR's paper gives 22.31 M for STaRHuBERT; Gram losses need no distillation heads.
    config = ArmHubertConfig.from_preset("starhubert")
    assert not config.has_projection_heads and not config.layer_grad_scale and all(config.reuse_pattern)
    assert round(ArmHubertModel(config).num_parameters() / 1e6, 2) == 22.31


@pytest.mark.parametrize("bad, message", [
    (dict(reuse_pattern=[True, False]), "one bool per layer"),
    (dict(reuse_pattern=[False, True, True, True]), "first layer"),
    (dict(num_attention_heads=5), "divisible"),
    (dict(reuse_mode="double"), "reuse_mode"),
    (dict(projection_dim=-1), "projection_dim"),
    (dict(hidden_dropout=1.5), "hidden_dropout"),
    (dict(layer_norm_eps=-1.0), "layer_norm_eps must be positive"),
    (dict(layer_norm_eps=float("nan")), "layer_norm_eps must be positive"),
    (dict(intermediate_size=0), "intermediate_size must be a positive integer"),
    (dict(mask_time_length=0), "mask_time_length must be a positive integer"),
    (dict(mask_time_min_masks=-1), "mask_time_min_masks must be >= 0"),
    (dict(hidden_act="nope"), "hidden_act must name one of Transformers' activations"),
    (dict(conv_dim=[16, 32, 32, 32, 32, 32, 64, 64, 0]), "positive integers"),
])
def test_invalid_config_values_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


def test_reuse_flags_must_be_booleans_not_strings():
    # "False" would otherwise become True and build a model without reuse layers.
    with pytest.raises(TypeError, match="reuse_pattern must be a list of booleans"):
        tiny_config(reuse_pattern=["True", "False", "True", "False"])
    assert tiny_config(reuse_pattern=[1, 0, 1, 0]).reuse_pattern == [True, False, True, False]


def test_a_field_changed_after_construction_is_checked(tmp_path):
    """As Transformers' strict configs do: the type at once, the checks across fields when a model is
    built from the config or the config is saved."""
    config = tiny_config()
    with pytest.raises(TypeError, match="'hidden_size' must be an int"):
        config.hidden_size = "32"
    with pytest.raises(TypeError, match="'reuse_pattern' must be a list of bool"):
        config.reuse_pattern = "TFTF"
    assert config.hidden_size == tiny_config().hidden_size  # a refused value is not kept
    config.num_hidden_layers = 2  # reuse_pattern still has one flag per layer of the old count
    with pytest.raises(ValueError, match="reuse_pattern has 4 entries but num_hidden_layers is 2"):
        ArmHubertModel(config)
    with pytest.raises(ValueError, match="reuse_pattern has 4 entries"):
        config.save_pretrained(tmp_path)
    config.reuse_pattern = [True, False]
    assert len(ArmHubertModel(config).encoder.layers) == 2


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match="armhubert-s"):
        ArmHubertConfig.from_preset("armhubert-xl")


def _one_hot_reuse(mode: str):
    torch.manual_seed(0)
    config = tiny_config(reuse_mode=mode)
    attention = ArmHubertAttention(config, reuses_map=True).eval()
    batch, frames, heads = 2, 7, config.num_attention_heads
    hidden = torch.randn(batch, frames, config.hidden_size)
    attended = torch.randint(frames, (batch, heads, frames))  # query t of head h attends frame attended[b, h, t]
    one_hot = torch.nn.functional.one_hot(attended, frames).float()
    output, _ = attention(hidden, reused_map=one_hot)
    # Expected: each head's slice of v_proj at the attended frame, then out_proj.
    values = attention.v_proj(hidden).view(batch, frames, heads, -1)
    picked = torch.stack([values[b, attended[b, h], h] for b in range(batch) for h in range(heads)])
    picked = picked.view(batch, heads, frames, -1).transpose(1, 2).reshape(batch, frames, -1)
    return output, attention.out_proj(picked)


def test_probs_reuse_of_a_one_hot_map_returns_the_attended_frame():
    output, expected = _one_hot_reuse("probs")
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-6)


def test_legacy_double_softmax_does_not_return_the_attended_frame():
    output, expected = _one_hot_reuse("legacy_double_softmax")
    assert (output - expected).abs().max() > 1e-2


def test_reuse_layers_have_no_query_key_projections():
    model = ArmHubertModel(tiny_config())
    names = {n for n, _ in model.named_parameters()}
    assert "encoder.layers.0.attention.q_proj.weight" in names
    assert "encoder.layers.1.attention.q_proj.weight" not in names
    assert "encoder.layers.1.attention.v_proj.weight" in names


def _grads_for_projection_loss(layer_grad_scale: bool, layer: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    # All layers normal: in an ARM network the reused attention map is a second path from layer i
    # to layer i + 1 that the formula (which is about the layer outputs y_i) does not cover.
    config = tiny_config(layer_grad_scale=layer_grad_scale, reuse_pattern=[True] * 4)
    model = ArmHubertModel(config).eval().double()  # eval: no dropout; float64: no rounding noise
    torch.manual_seed(1)
    waveform = torch.randn(1, 4000, dtype=torch.float64)
    out = model(waveform, output_hidden_states=True)
    weights = torch.randn_like(out.projected_hidden_states[layer], generator=torch.Generator().manual_seed(2))
    (out.projected_hidden_states[layer] * weights).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_layer_gradient_scaling_follows_the_spec_formula():
    """Loss on layer k's projection: the gradient of layer j <= k is scaled by
    m_k (1 - m_k) * prod_{j <= l < k} m_l, with m_i = (L - i) / (L - i + 1); heads are unscaled."""
    k, num_layers = 2, 4
    m = [(num_layers - i) / (num_layers - i + 1) for i in range(num_layers)]
    scaled = _grads_for_projection_loss(True, k)
    plain = _grads_for_projection_loss(False, k)
    assert scaled.keys() == plain.keys()
    checked = set()
    for name, grad in scaled.items():
        if name.startswith("projection_heads."):
            factor = 1.0
        elif name.startswith("encoder.layers."):
            j = int(name.split(".")[2])
            factor = m[k] * (1 - m[k]) * torch.tensor(m[j:k]).prod().item()
        else:  # everything below the first layer
            factor = m[k] * (1 - m[k]) * torch.tensor(m[:k]).prod().item()
        torch.testing.assert_close(grad, plain[name] * factor, rtol=1e-7, atol=1e-12)
        checked.add(".".join(name.split(".")[: 3 if name.startswith("encoder.layers.") else 1]))
    assert {"encoder.layers.0", "encoder.layers.2", "feature_extractor", "projection_heads"} <= checked


def test_padded_batch_equals_each_item_alone():
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    waveforms = bundled_waveforms(count=3)
    values, mask = pad_batch(waveforms)
    with torch.no_grad():
        batched = model(values, attention_mask=mask, output_hidden_states=True)
        for b, waveform in enumerate(waveforms):
            alone = model(waveform[None], output_hidden_states=True)
            frames = alone.last_hidden_state.shape[1]
            for got, want in zip(batched.hidden_states + batched.projected_hidden_states,
                                 alone.hidden_states + alone.projected_hidden_states):
                torch.testing.assert_close(got[b, :frames], want[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("reuse_mode", ["probs", "legacy_double_softmax"])
def test_a_padding_only_row_leaves_the_other_rows_gradients_as_alone(attention, reuse_mode):
    """A batch row without a real frame (its attention has no key to attend to) must not turn the
    batch's gradients into NaN: the loss on the other rows gives the gradients those rows give alone."""
    torch.manual_seed(0)
    config = tiny_config(reuse_mode=reuse_mode, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         feat_proj_dropout=0.0, layerdrop=0.0)
    config._attn_implementation = attention
    model = ArmHubertModel(config).train()
    waveform = bundled_waveforms(count=1)[0][:16000]

    def gradients(values, mask):
        model.zero_grad()
        model(values, attention_mask=mask).last_hidden_state[0].square().sum().backward()
        return {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}

    batch = torch.stack([waveform, torch.zeros_like(waveform)])
    mask = torch.tensor([[1] * len(waveform), [0] * len(waveform)])
    with_empty_row, alone = gradients(batch, mask), gradients(waveform[None], torch.ones(1, len(waveform)).long())
    assert with_empty_row.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(with_empty_row[name], alone[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_mask_of_ones_only_is_dropped_on_inference_and_kept_in_training(monkeypatch):
    """Nothing padded: eager inference runs the unpadded path (the plain GroupNorm, attention without a key
    mask), which gives exactly the outputs of a call without a mask; a training forward keeps the mask, since
    finding out would read a value back from the device, and so does inference of a padded batch."""
    masked_norms = []
    norm = ArmHubertConvLayer._masked_group_norm
    monkeypatch.setattr(ArmHubertConvLayer, "_masked_group_norm", lambda *args: masked_norms.append(1) or norm(*args))
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    values, ones = torch.randn(2, 4000), torch.ones(2, 4000, dtype=torch.long)
    with torch.no_grad():
        without = model(values, output_hidden_states=True)
        with_ones = model(values, attention_mask=ones, output_hidden_states=True)
    assert masked_norms == []
    for got, want in zip(with_ones.hidden_states, without.hidden_states):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    model.train()(values, attention_mask=ones)
    assert masked_norms == [1]
    padded = ones.clone()
    padded[1, 3000:] = 0
    with torch.no_grad():
        model.eval()(values, attention_mask=padded)
    assert masked_norms == [1, 1]


def test_masked_group_norm_in_float16_counts_past_its_largest_integer():
    """A padded batch in a float16 model: the first conv of a 21 s item has 67,200 steps, more than
    float16's 65,504; the statistics are taken in float32, as nn.GroupNorm takes them."""
    torch.manual_seed(0)
    layer = ArmHubertConvLayer(tiny_config(), 0)
    lengths = torch.tensor([67_200, 40_000])
    steps = torch.randn(2, layer.conv.out_channels, 67_200) * 4
    expected = layer._masked_group_norm(steps, lengths)
    got = layer.half()._masked_group_norm(steps.half(), lengths)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=2e-2)
    # and the unpadded item equals the plain GroupNorm
    torch.testing.assert_close(expected[:1], layer.float().layer_norm(steps[:1]), rtol=0, atol=1e-5)


def test_fused_attention_path_equals_explicit_probabilities():
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config(reuse_pattern=[True] * 4)).eval()
    values, mask = pad_batch(bundled_waveforms(count=2))
    with torch.no_grad():
        fused = model(values, attention_mask=mask).last_hidden_state
        explicit = model(values, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(fused, explicit.last_hidden_state, rtol=0, atol=1e-5)
    assert len(explicit.attentions) == 4
    torch.testing.assert_close(explicit.attentions[0].sum(-1), torch.ones(2, 4, fused.shape[1]))


def test_reuse_from_queries_and_keys_equals_reuse_of_explicit_probabilities():
    """Reuse layers rerun the fused kernel on the reused queries and keys; with output_attentions the
    probabilities are written out and reused instead. Outputs and gradients must agree."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                       feat_proj_dropout=0.0)).train()
    values, mask = pad_batch(bundled_waveforms(count=2))
    results = []
    for explicit in (False, True):
        model.zero_grad()
        out = model(values, attention_mask=mask, output_hidden_states=True, output_attentions=explicit)
        sum(p.square().mean() for p in out.projected_hidden_states).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.last_hidden_state.detach(), grads))
    (fused, fused_grads), (probs, probs_grads) = results
    torch.testing.assert_close(fused, probs, rtol=0, atol=1e-5)
    reuse_query = "encoder.layers.0.attention.q_proj.weight"  # layer 0's map is reused by layer 1
    assert fused_grads[reuse_query].abs().max() > 0
    for name in fused_grads:
        torch.testing.assert_close(fused_grads[name], probs_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mask_time_indices_write_the_mask_embedding():
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    waveform = bundled_waveforms(count=1)[0][None]
    frames = int(model._get_feat_extract_output_lengths(waveform.shape[1]))
    mask = torch.zeros(1, frames, dtype=torch.bool)
    mask[0, 5:15] = True
    model.encoder.layers = model.encoder.layers[:0]  # look at the encoder input directly
    with torch.no_grad():
        plain = model.feature_projection(model.feature_extractor(waveform).transpose(1, 2))
        masked_input = model._mask_hidden_states(plain, mask, None)
    torch.testing.assert_close(masked_input[0, 5:15], model.masked_spec_embed.expand(10, -1))
    torch.testing.assert_close(masked_input[0, 15:], plain[0, 15:])


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant):
    """Reentrant checkpointing only backpropagates into a checkpointed block whose inputs require grad:
    the conv feature encoder, which reads the waveform, must still get its gradients."""
    waveform = torch.randn(2, 3200, generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = ArmHubertModel(tiny_config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                           feat_proj_dropout=0.0))
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        out = model(waveform, output_hidden_states=True)
        sum(p.square().sum() for p in out.projected_hidden_states).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert model.is_gradient_checkpointing
    assert grads[1]["feature_extractor.conv_layers.0.conv.weight"] is not None
    for name in grads[0]:
        if grads[0][name] is None:  # masked_spec_embed: no mask here
            assert grads[1][name] is None, name
        else:
            assert grads[1][name] is not None, f"{name} got no gradient with checkpointing"
            torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("make_input, message", [
    (lambda: torch.randn(16000), "add a batch dimension"),
    (lambda: torch.randn(1, 1, 16000), "squeeze"),
    (lambda: torch.randn(1, 399), "receptive field"),
    (lambda: torch.tensor([[float("nan")] * 1000]), "NaN"),
    (lambda: torch.ones(1, 1000, dtype=torch.long), "floating point"),
    (lambda: torch.ones(1, 1000, dtype=torch.int16), r"float\(\) / 32768 for int16"),
    (lambda: torch.randn(0, 1000), "no utterance"),
])
def test_bad_inputs_raise_clear_errors(make_input, message):
    model = ArmHubertModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=message):
        model(make_input())


def test_attention_mask_errors():
    model = ArmHubertModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="same shape"):
        model(torch.randn(2, 1000), attention_mask=torch.ones(2, 999, dtype=torch.long))
    short = torch.ones(2, 1000, dtype=torch.long)
    short[1, 300:] = 0
    with pytest.raises(ValueError, match="300 samples"):
        model(torch.randn(2, 1000), attention_mask=short)
    with pytest.raises(TypeError, match="attention_mask must be a torch.Tensor, got list"):
        model(torch.randn(1, 1000), attention_mask=[[1] * 1000])


def test_float64_and_float16_audio_is_cast_to_the_model_dtype():
    """soundfile.read gives float64 by default; the model runs it as float32, with float32's outputs."""
    import soundfile

    from conftest import LIBRISPEECH

    model = ArmHubertForCTC(tiny_config(projection_dim=0, vocab_size=8)).eval()
    path = sorted(LIBRISPEECH.joinpath("dev-clean").rglob("*.flac"))[0]
    as_float64 = torch.from_numpy(soundfile.read(path)[0])[None, :16000]
    as_float32 = torch.from_numpy(soundfile.read(path, dtype="float32")[0])[None, :16000]
    assert as_float64.dtype == torch.float64
    with torch.no_grad():
        expected = model(as_float32).logits
        from_float64 = model(as_float64, attention_mask=torch.ones_like(as_float64, dtype=torch.long)).logits
        from_float16 = model(as_float32.half()).logits
        expected_float16 = model(as_float32.half().float()).logits
    assert from_float64.dtype == torch.float32
    torch.testing.assert_close(from_float64, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_float16, expected_float16, rtol=0, atol=1e-6)


def test_left_padded_attention_mask_is_refused(monkeypatch):
    model = ArmHubertModel(tiny_config()).eval()
    values, right = pad_batch([torch.randn(1000), torch.randn(600)])
    left = right.flip(-1)  # row 1: 400 zeros, then 600 ones
    with torch.no_grad():
        model(values, attention_mask=right)
        with pytest.raises(ValueError, match=r"attention_mask row\(s\) \[1\] have padding \(0\) before real samples"
                                             r" \(1\); the model expects right padding"):
            model(values, attention_mask=left)
        # Data-dependent checks are skipped while tracing or exporting.
        import modeling_armhubert

        monkeypatch.setattr(modeling_armhubert, "_is_tracing", lambda: True)
        assert model(values, attention_mask=left).last_hidden_state.shape[0] == 2


class _HostReadCounter(TorchDispatchMode):
    """Counts the ops that read a tensor's value back to the host: `_local_scalar_dense` (behind `.item()`,
    `int(t)`, `bool(t)`) and `nonzero` (its output size). On a GPU each one is a host-device synchronisation."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero):
            self.reads.append(str(func))
        return func(*args, **(kwargs or {}))


class _TensorValueReads(TorchFunctionMode):
    """Records the tensor methods that hand a value to Python (`.tolist()`, `.item()`, `bool(t)`, ...). A
    CPU tensor's `.tolist()` does not pass through the dispatcher, so `_HostReadCounter` cannot see it."""

    READS = frozenset({"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero"})

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_no_value_back_and_inference_still_checks_the_input():
    """The student's training forward and backward (the distillation path: masks from the collator) read
    nothing back from the tensors, so on a GPU they never wait for the device; eager inference of the same
    batch does, for its input checks (left padding, length, NaN), which still raise."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config())
    values, mask = pad_batch([torch.randn(3000), torch.randn(2000)])
    frames = model._get_feat_extract_output_lengths(3000)
    mask_time_indices = torch.zeros(2, frames, dtype=torch.bool)
    mask_time_indices[:, 2:4] = True
    with _HostReadCounter() as training:
        out = model.train()(values, attention_mask=mask, mask_time_indices=mask_time_indices, output_hidden_states=True)
        sum(state.square().mean() for state in out.projected_hidden_states).backward()
    assert training.reads == []
    with _TensorValueReads() as inference, torch.no_grad():
        model.eval()(values, attention_mask=mask)
    assert inference.reads, inference.reads  # the control: the counter sees the checks' reads
    with pytest.raises(ValueError, match="NaN"):
        model(values.masked_fill(mask == 0, float("nan")), attention_mask=mask)


@pytest.mark.parametrize("mask_kind", ["padded", "ones", "none"])
def test_eager_inference_reads_the_input_checks_back_once(mask_kind):
    """Right padding, the shortest length, finiteness and whether anything is padded at all are read back
    from the device in one go: on a GPU, one synchronisation per inference call instead of four."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    values, mask = pad_batch([torch.randn(3000), torch.randn(2000)])
    mask = {"padded": mask, "ones": torch.ones_like(mask), "none": None}[mask_kind]
    with _TensorValueReads() as reads, torch.no_grad():
        model(values, attention_mask=mask)
    assert len(reads.reads) == 1, reads.reads


def test_a_frozen_student_checks_its_input_on_inference_only(monkeypatch):
    """A SUPERB task model keeps its student in eval mode while it trains; the student's input checks
    follow the task model's mode all the same."""
    calls = []
    check = ArmHubertModel._check_input_values
    monkeypatch.setattr(ArmHubertModel, "_check_input_values", lambda *args: calls.append(1) or check(*args))
    model = ArmHubertForSequenceClassification(tiny_config(num_labels=3, classifier_mode="superb",
                                                           classifier_proj_size=16))
    values, mask = pad_batch([torch.randn(3000), torch.randn(2000)])
    model.train()(values, attention_mask=mask, labels=torch.tensor([0, 2])).loss.backward()
    assert not model.armhubert.training and calls == []
    with torch.no_grad():
        model.eval()(values, attention_mask=mask)
    assert calls == [1]
    with pytest.raises(ValueError, match="before real samples"):
        model(values, attention_mask=mask.flip(-1))


def test_ctc_loss_is_finite_with_padded_labels_and_decreases():
    torch.manual_seed(0)
    model = ArmHubertForCTC(tiny_config(vocab_size=12, layer_grad_scale=False))
    model.freeze_feature_encoder()
    values, mask = pad_batch(bundled_waveforms(count=4))
    labels = torch.randint(1, 12, (4, 20), generator=torch.Generator().manual_seed(0))
    labels[1, 12:] = -100
    labels[3, 5:] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(8):
        loss = model(values, attention_mask=mask, labels=labels).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(p.grad is None for p in model.armhubert.feature_extractor.parameters())


def test_ctc_loss_is_pytorchs_ctc_loss_over_real_frames_and_labels():
    """Transformers' CTC loss gives what torch's ctc_loss gives on the unpadded frames and labels."""
    torch.manual_seed(0)
    model = ArmHubertForCTC(tiny_config(vocab_size=12, projection_dim=0, ctc_loss_reduction="sum")).eval()
    values, mask = pad_batch(bundled_waveforms(count=2))
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]])
    with torch.no_grad():
        out = model(values, attention_mask=mask, labels=labels)
    frames = model._get_feat_extract_output_lengths(mask.sum(-1))
    log_probs = torch.log_softmax(out.logits, -1)
    want = sum(torch.nn.functional.ctc_loss(log_probs[b, : frames[b]], labels[b][labels[b] >= 0][None],
                                            frames[b : b + 1], (labels[b] >= 0).sum()[None], blank=0, reduction="sum")
               for b in range(2))
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-4)


def test_ctc_loss_ignores_label_padding():
    torch.manual_seed(0)
    model = ArmHubertForCTC(tiny_config(vocab_size=12)).eval()
    values, mask = pad_batch(bundled_waveforms(count=2))
    labels = torch.tensor([[3, 4, 5, -100, -100], [6, 7, 8, 9, 10]])
    longer = torch.cat([labels, torch.full((2, 3), -100)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(values, attention_mask=mask, labels=labels).loss,
                                   model(values, attention_mask=mask, labels=longer).loss)


def test_auto_classes_in_process(tmp_path):
    torch.manual_seed(0)
    model = ArmHubertForCTC(tiny_config(vocab_size=10)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_armhubert.ArmHubertConfig",
                                  "AutoModel": "modeling_armhubert.ArmHubertModel",
                                  "AutoModelForCTC": "modeling_armhubert.ArmHubertForCTC",
                                  "AutoModelForAudioClassification":
                                      "modeling_armhubert.ArmHubertForSequenceClassification",
                                  "AutoModelForAudioFrameClassification":
                                      "modeling_armhubert.ArmHubertForSuperbDiarization",

                                  "AutoModelForAudioXVector": "modeling_armhubert.ArmHubertForXVector"}
    # What push_to_hub uploads: the code files travel with the weights.
    for code_file in ("modeling_armhubert.py", "configuration_armhubert.py"):
        assert (tmp_path / code_file).read_text() == (REPO / code_file).read_text()
    assert isinstance(AutoModelForCTC.from_pretrained(tmp_path), ArmHubertForCTC)
    assert isinstance(AutoModel.from_pretrained(tmp_path), ArmHubertModel)


@pytest.mark.parametrize("kind", ["model", "ctc"])
def test_fresh_process_loads_with_trust_remote_code(tmp_path, offline_hf, kind):
    torch.manual_seed(0)
    model = (ArmHubertModel if kind == "model" else ArmHubertForCTC)(tiny_config(vocab_size=10)).eval()
    save_dir = tmp_path / "student"
    model.save_pretrained(save_dir)
    values, mask = pad_batch(bundled_waveforms(count=2))
    with torch.no_grad():
        expected = model(values, attention_mask=mask, output_hidden_states=True)
    got = run_in_fresh_process(save_dir, kind, values, mask, tmp_path)
    assert torch.equal(got["first"], expected[0])
    assert len(got["hidden"]) == len(expected.hidden_states)
    for a, b in zip(got["hidden"], expected.hidden_states):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# Initialisation on every construction path
# ----------------------------------------------------------------------------------------------


def _superb_config(**overrides) -> ArmHubertConfig:
    return tiny_config(vocab_size=12, superb_projection_dim=16, superb_lstm_hidden_size=8, **overrides)


# Every class, in the configurations that change which parameters it has.
MODEL_CASES = {
    "model": (ArmHubertModel, lambda: tiny_config()),
    "ctc": (ArmHubertForCTC, lambda: tiny_config(vocab_size=12, projection_dim=0, mask_time_prob=0.3)),
    "superb-projected": (ArmHubertForSuperbCTC, lambda: _superb_config()),
    "superb-hidden": (ArmHubertForSuperbCTC, lambda: _superb_config(projection_dim=0, superb_features="hidden_states")),
    "classifier-superb": (ArmHubertForSequenceClassification,
                          lambda: tiny_config(num_labels=40, classifier_mode="superb", classifier_proj_size=64)),
    "classifier-fine-tune-slots": (ArmHubertForSequenceClassification, lambda: tiny_config(
        num_labels=40, classifier_slot_names=["a", "b"], classifier_slot_sizes=[30, 10], classifier_mode="fine_tune",
        use_weighted_layer_sum=True, superb_features="hidden_states", classifier_proj_size=64, mask_time_prob=0.3)),
}


def _build(path: str, model_class, config):
    torch.manual_seed(0)
    if path == "plain":
        return model_class(config)
    if path == "meta":  # empty-weight init: build without memory, then allocate and initialise
        with torch.device("meta"):
            model = model_class(config)
        model.to_empty(device="cpu")
        model.init_weights()
        return model
    return model_class.from_pretrained(None, config=config, state_dict={})  # nothing loaded: all keys missing


def _check_documented_init(model, config: ArmHubertConfig) -> None:
    modules = dict(model.named_modules())
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), f"{name} is not finite"
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else model
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("pos_conv_embed.conv.parametrizations.weight.original1"):  # weight-norm direction
            std = 2 * math.sqrt(1 / (config.num_conv_pos_embeddings * config.hidden_size))
            assert abs(param.std().item() - std) < 0.1 * std, (name, param.std().item(), std)
            assert abs(param.mean().item()) < 0.1 * std, name
        elif name.endswith("pos_conv_embed.conv.parametrizations.weight.original0"):  # weight-norm norm = |v|
            direction = owner.original1
            torch.testing.assert_close(param, torch.linalg.vector_norm(direction, dim=(0, 1), keepdim=True), msg=name)
        elif leaf == "bias":
            assert torch.equal(param, torch.zeros_like(param)), f"{name} is not zero"
        elif isinstance(owner, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
            assert torch.equal(param, torch.ones_like(param)), f"{name} is not one"
        elif isinstance(owner, torch.nn.Linear):
            std = config.initializer_range
            assert abs(param.std().item() - std) < 0.15 * std, (name, param.std().item())
        elif isinstance(owner, torch.nn.Conv1d):  # conv feature encoder: Kaiming normal
            std = math.sqrt(2 / (param.shape[1] * param.shape[2]))
            assert abs(param.std().item() - std) < 0.25 * std, (name, param.std().item(), std)
        elif isinstance(owner, torch.nn.LSTM):
            bound = 1 / math.sqrt(owner.hidden_size)
            assert param.abs().max() <= bound and param.std() > 0.4 * bound, name
        elif leaf == "masked_spec_embed":  # uniform(0, 1)
            assert 0 <= param.min() and param.max() <= 1 and abs(param.mean().item() - 0.5) < 0.15, name
        elif leaf == "layer_weights":
            assert torch.equal(param, torch.zeros_like(param)), name
        else:
            raise AssertionError(f"no documented init for {name}")


@pytest.mark.parametrize("path", ["plain", "meta", "from_pretrained"])
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_every_parameter_gets_its_documented_init(case, path):
    model_class, make_config = MODEL_CASES[case]
    config = make_config()
    model = _build(path, model_class, config)
    _check_documented_init(model, config)
    values, mask = pad_batch([torch.randn(4000), torch.randn(3000)])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(values, attention_mask=mask)[0]).all()


# ----------------------------------------------------------------------------------------------
# Attention implementations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reuse_mode", ["probs", "legacy_double_softmax"])
def test_attn_implementation_sdpa_and_eager_are_honoured_and_agree(tmp_path, monkeypatch, reuse_mode):
    torch.manual_seed(0)
    # Layer 2's map is not reused: it runs the fused kernel in both modes.
    config = tiny_config(reuse_mode=reuse_mode, reuse_pattern=[True, False, True, True])
    ArmHubertModel(config).save_pretrained(tmp_path)
    values, mask = pad_batch([torch.randn(5000), torch.randn(3500)])
    fused_calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *args, **kwargs: fused_calls.append(1) or sdpa(*args, **kwargs))
    outputs = {}
    for implementation in (None, "sdpa", "eager"):
        model = ArmHubertModel.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert model.config._attn_implementation == (implementation or "sdpa")
        fused_calls.clear()
        with torch.no_grad():
            outputs[implementation] = model(values, attention_mask=mask, output_hidden_states=True)
        # "eager": the explicit softmax everywhere; "sdpa": the fused kernel in every layer that does not
        # need the probabilities (all layers in "probs" mode, the normal layers not reused in legacy mode).
        expected_calls = {"eager": 0, "sdpa": 4 if reuse_mode == "probs" else 2}[implementation or "sdpa"]
        assert len(fused_calls) == expected_calls, (implementation, len(fused_calls))
    for implementation in ("sdpa", "eager"):
        for got, want in zip(outputs[implementation].hidden_states, outputs[None].hidden_states):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_attn_implementation_can_be_switched_on_a_model():
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    assert model.config._attn_implementation == "sdpa"
    values = torch.randn(2, 4000)
    with torch.no_grad():
        fused = model(values).last_hidden_state
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        explicit = model(values).last_hidden_state
    torch.testing.assert_close(fused, explicit, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Task models carry only what they use
# ----------------------------------------------------------------------------------------------


def _ctc_batch(vocab_size: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values, mask = pad_batch([torch.randn(6000, generator=torch.Generator().manual_seed(1)),
                              torch.randn(4500, generator=torch.Generator().manual_seed(2))])
    labels = torch.tensor([[3, 4, 5, 6], [7, 8, -100, -100]]) % vocab_size
    return values, mask, labels


@pytest.mark.parametrize("case", ["ctc", "ctc-from-student-config", "superb-projected", "superb-hidden"])
def test_task_model_training_step_gives_every_trainable_parameter_a_gradient(case):
    """A parameter without a gradient makes DistributedDataParallel (without find_unused_parameters) fail."""
    if case == "ctc-from-student-config":  # heads and no SpecAugment: neither may be carried
        model_class, config = ArmHubertForCTC, tiny_config(vocab_size=12, mask_time_prob=0.0)
    else:
        model_class, make_config = MODEL_CASES[case]
        config = make_config()
    torch.manual_seed(0)
    model = model_class(config).train()
    values, mask, labels = _ctc_batch()
    loss = model(values, attention_mask=mask, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    unused = sorted(n for n, p in trainable.items() if p.grad is None)
    assert not unused, unused
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    if model_class is ArmHubertForCTC or config.superb_features == "hidden_states":
        assert model.armhubert.projection_heads is None and model.config.projection_dim == 0


def test_loading_a_student_with_heads_into_ctc_drops_them_with_one_log_line(tmp_path, caplog):
    torch.manual_seed(0)
    student = ArmHubertModel(tiny_config(vocab_size=12)).eval()
    assert student.projection_heads is not None
    student.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO):
        model = ArmHubertForCTC.from_pretrained(tmp_path).eval()
    notes = [r.getMessage() for r in caplog.records if "distillation heads" in r.getMessage()]
    assert len(notes) == 1, notes
    assert "ArmHubertForCTC" in notes[0] and "projection_dim=48" in notes[0]
    assert model.armhubert.projection_heads is None and model.config.projection_dim == 0
    assert not any(name.startswith("armhubert.projection_heads") for name in model.state_dict())
    # The student's weights are all loaded: the encoder gives the student's outputs.
    values, mask, _ = _ctc_batch()
    with torch.no_grad():
        want = student(values, attention_mask=mask).last_hidden_state
        got = model(values, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Battery in the style of Transformers' model tests
# ----------------------------------------------------------------------------------------------


def _first_output(model, values, mask, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(values, attention_mask=mask, **kwargs)[0]


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_save_load_round_trip_gives_the_same_outputs(case, tmp_path):
    model_class, make_config = MODEL_CASES[case]
    torch.manual_seed(0)
    model = model_class(make_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path).eval()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    values, mask, _ = _ctc_batch()
    # LSTM weights loaded into a fresh module may be laid out differently: equal up to rounding.
    torch.testing.assert_close(_first_output(loaded, values, mask), _first_output(model, values, mask), rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_output_shapes_with_and_without_return_dict(case):
    model_class, make_config = MODEL_CASES[case]
    config = make_config()
    torch.manual_seed(0)
    model = model_class(config).eval()
    values, mask, _ = _ctc_batch()
    frames = int(model._get_feat_extract_output_lengths(values.shape[1]))
    with torch.no_grad():
        out = model(values, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        as_tuple = model(values, attention_mask=mask, output_hidden_states=True, output_attentions=True,
                         return_dict=False)
    assert isinstance(as_tuple, tuple)
    if model_class is ArmHubertForSequenceClassification:
        assert out[0].shape == (2, config.num_labels)  # one row of logits per utterance
    else:
        width = config.hidden_size if model_class is ArmHubertModel else config.vocab_size
        assert out[0].shape == (2, frames, width)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert all(h.shape == (2, frames, config.hidden_size) for h in out.hidden_states)
    assert len(out.attentions) == config.num_hidden_layers
    assert all(a.shape == (2, config.num_attention_heads, frames, frames) for a in out.attentions)
    if model_class is ArmHubertModel:
        assert all(p.shape == (2, frames, config.projection_dim) for p in out.projected_hidden_states)
    assert len(as_tuple) == len(out.to_tuple())
    for got, want in zip(as_tuple, out.to_tuple()):
        if isinstance(want, torch.Tensor):
            assert torch.equal(got, want)
        else:
            assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_batching_equivalence_padded_batch_equals_each_item_alone(case):
    model_class, make_config = MODEL_CASES[case]
    torch.manual_seed(0)
    model = model_class(make_config()).eval()
    values, mask, _ = _ctc_batch()
    batched = _first_output(model, values, mask)
    for b in range(values.shape[0]):
        length = int(mask[b].sum())
        alone = _first_output(model, values[b : b + 1, :length], None)
        torch.testing.assert_close(batched[b, : alone.shape[1]], alone[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("kernel, stride", [(10, 5), (3, 2), (2, 2), (1, 1), (7, 3), (2, 3), (5, 1)])
def test_conv_as_matmul_is_the_conv(kernel, stride):
    """Any kernel and stride, with and without bias: the time-major matrix product equals nn.Conv1d, and so
    do the gradients (float64, so that only the formulation is compared)."""
    torch.manual_seed(kernel * 10 + stride)
    for bias in (True, False):
        conv = nn.Conv1d(4, 6, kernel, stride, bias=bias).double()
        frames = torch.randn(2, 4, 41, dtype=torch.float64, requires_grad=True)
        reference = conv(frames).transpose(1, 2)
        output = conv_as_matmul(frames.transpose(1, 2), conv)
        torch.testing.assert_close(output, reference, rtol=0, atol=1e-12)
        upstream = torch.randn_like(reference)
        expected = torch.autograd.grad(reference, [frames, conv.weight], upstream)
        got = torch.autograd.grad(conv_as_matmul(frames.transpose(1, 2), conv), [frames, conv.weight], upstream)
        for want, have in zip(expected, got):
            torch.testing.assert_close(have, want, rtol=0, atol=1e-12)
    # A silent block (all zeros) gives the bias, not NaN: its scale is clamped.
    silent = conv_as_matmul(torch.zeros(1, 41, 4, dtype=torch.float64), conv)
    assert torch.isfinite(silent).all()


@pytest.mark.parametrize("kernel", [128, 17, 16, 2, 1])
def test_the_positional_conv_from_spectra_is_the_conv(kernel):
    """CPU inference computes the positional conv from spectra: equal to the conv (which runs with grad
    enabled) for odd and even kernels, lengths shorter and longer than a block, and a padded batch."""
    torch.manual_seed(kernel)
    config = tiny_config(num_conv_pos_embeddings=kernel, num_conv_pos_embedding_groups=4)
    embedding = ArmHubertPositionalConvEmbedding(config)
    for frames in (1, 5, 127, 128, 300):
        hidden_states = torch.randn(3, frames, config.hidden_size)
        hidden_states[1, frames // 2 :] = 0.0  # padded frames are zeros, as the encoder hands them over
        with torch.no_grad():
            from_spectra = embedding(hidden_states)
        torch.testing.assert_close(from_spectra, embedding(hidden_states).detach())  # fp32 tolerances


def test_the_positional_conv_renews_its_kernel_spectrum_when_the_weights_change():
    """The spectrum is kept between inference calls and renewed whenever the weights differ, however they
    were changed: a write through `.data` (no version counter), loading a state dict, an optimiser step."""
    torch.manual_seed(0)
    config = tiny_config()
    embedding = ArmHubertPositionalConvEmbedding(config)
    hidden_states = torch.randn(2, 40, config.hidden_size)

    def check() -> torch.Tensor:
        with torch.no_grad():
            from_spectra = embedding(hidden_states)
        torch.testing.assert_close(from_spectra, embedding(hidden_states).detach())  # fp32 tolerances
        return embedding._kernel_spectrum_cache[1]

    first = check()
    assert check() is first  # the same weights: kept
    direction = embedding.conv.parametrizations.weight.original1
    direction.data[0, 0, 0] += 1.0
    second = check()
    assert second is not first
    other = ArmHubertPositionalConvEmbedding(config)
    embedding.load_state_dict(other.state_dict())
    third = check()
    assert third is not second
    embedding(hidden_states).square().sum().backward()
    torch.optim.SGD(embedding.parameters(), lr=0.1).step()
    assert check() is not third


def test_the_matmul_conv_encoder_equals_the_conv_one_on_a_padded_batch():
    """The layout the int8 export uses gives the model's outputs, and an item alone equals it in a padded batch."""
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    waveforms = [0.1 * torch.randn(5000), 0.1 * torch.randn(3100)]
    values, mask = pad_batch(waveforms)
    with torch.no_grad():
        reference = model(values, attention_mask=mask).last_hidden_state
        model.feature_extractor.convs_as_matmul = True
        output = model(values, attention_mask=mask).last_hidden_state
        alone = model(waveforms[1][None]).last_hidden_state
    frames = alone.shape[1]
    torch.testing.assert_close(output[1, :frames], reference[1, :frames], rtol=0, atol=1e-5)
    torch.testing.assert_close(output[0], reference[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(alone[0], output[1, :frames], rtol=0, atol=1e-5)


def test_cpu_batches_take_channels_last_convs_unless_the_convs_are_trained():
    """On a CPU a batch runs the conv encoder channels last (its output (B, C, T) laid out as (B, T, C)),
    except where gradients reach the convs, whose backward is slower in that layout; both give the same
    features and gradients."""
    torch.manual_seed(0)
    encoder = ArmHubertModel(tiny_config()).train().feature_extractor
    audio = torch.randn(2, 4000)
    trained = encoder(audio)
    trained.square().mean().backward()
    gradients = {name: param.grad for name, param in encoder.named_parameters()}
    assert trained.stride(-1) == 1  # channels first
    with torch.no_grad():
        inferred = encoder(audio)
    assert inferred.stride(1) == 1  # channels last
    torch.testing.assert_close(inferred, trained.detach(), rtol=1e-5, atol=1e-5)
    assert encoder(audio[:1]).stride(-1) == 1  # one utterance: channels first, as in inference

    # The channels-last layers, run with gradients, give the same gradients.
    encoder.zero_grad()
    encoder.convs_in_layout(audio, channels_last=True).square().mean().backward()
    for name, param in encoder.named_parameters():
        torch.testing.assert_close(param.grad, gradients[name], rtol=1e-4, atol=1e-7)

    encoder._freeze_parameters()
    assert encoder(audio).stride(1) == 1  # frozen convs (fine-tuning): channels last
