"""ArmHubertModel / ArmHubertForCTC: presets, attention map reusing, gradient scaling, padding,
input errors, Auto classes and remote-code loading."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCTC

from conftest import REPO, bundled_waveforms, pad_batch, run_in_fresh_process, tiny_config
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertAttention, ArmHubertForCTC, ArmHubertModel

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


@pytest.mark.parametrize("bad, message", [
    (dict(reuse_pattern=[True, False]), "one bool per layer"),
    (dict(reuse_pattern=[False, True, True, True]), "first layer"),
    (dict(num_attention_heads=5), "divisible"),
    (dict(reuse_mode="double"), "reuse_mode"),
    (dict(projection_dim=-1), "projection_dim"),
    (dict(hidden_dropout=1.5), "hidden_dropout"),
])
def test_invalid_config_values_raise_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**bad)


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


def test_gradient_checkpointing_gives_the_same_gradients():
    waveform = torch.randn(2, 3200, generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = ArmHubertModel(tiny_config(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                           feat_proj_dropout=0.0))
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        out = model(waveform, output_hidden_states=True)
        sum(p.square().sum() for p in out.projected_hidden_states).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert model.is_gradient_checkpointing
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("make_input, message", [
    (lambda: torch.randn(16000), "add a batch dimension"),
    (lambda: torch.randn(1, 1, 16000), "squeeze"),
    (lambda: torch.randn(1, 399), "receptive field"),
    (lambda: torch.tensor([[float("nan")] * 1000]), "NaN"),
    (lambda: torch.ones(1, 1000, dtype=torch.long), "floating point"),
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
                                  "AutoModelForCTC": "modeling_armhubert.ArmHubertForCTC"}
    # What push_to_hub uploads: the code files travel with the weights.
    for code_file in ("modeling_armhubert.py", "configuration_armhubert.py", "span_mask.py"):
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
