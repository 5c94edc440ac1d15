"""The benchmark scripts run (on tiny shapes) and report what they claim: exact parameter counts,
MACs that match hand counts, consistent speed rows. Nothing here asserts on timings."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

from conftest import REPO

from armhubert_training import export_onnx
from benchmarks import (
    bench_utils, distill_end_to_end, distill_throughput, front_end_layouts, front_end_share, inference_speed,
    int8_accuracy, size_compute,
)
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertModel

# docs/method.md §1: exact parameter counts (with heads, without heads).
PUBLISHED_PARAMETER_COUNTS = {
    "armhubert": (26_448_448, 22_015_552),
    "armhubert-s": (22_394_080, 18_403_552),
    "armwavlm-s": (22_394_080, 18_403_552),
    "maskhubert": (26_635_840, 22_202_944),
}


# -- MAC counting ------------------------------------------------------------------------------


def test_macs_of_single_layers_are_counted_exactly():
    torch.manual_seed(0)
    assert bench_utils.count_forward_macs(nn.Linear(480, 864), torch.randn(1, 499, 480))[0] == 499 * 480 * 864
    # Conv1d(1 -> 128, kernel 10, stride 5) on 1 s: 3199 output steps.
    assert bench_utils.count_forward_macs(nn.Conv1d(1, 128, 10, 5, bias=False), torch.randn(1, 1, 16000))[0] \
        == 3199 * 128 * 10
    # The grouped positional conv: 16 groups of 30 channels, kernel 128, padding 64 -> T + 1 steps.
    grouped = nn.Conv1d(480, 480, 128, padding=64, groups=16)
    assert bench_utils.count_forward_macs(grouped, torch.randn(2, 480, 49))[0] == 2 * 50 * 480 * 30 * 128


@pytest.mark.parametrize("mask", [False, True])
def test_cpu_fused_attention_is_counted_like_its_two_matrix_products(mask):
    """FlopCounterMode alone does not count the CPU SDPA kernel; ours counts QK^T and PV."""
    batch, heads, frames, dim = 2, 4, 37, 16
    q, k, v = (torch.randn(batch, heads, frames, dim) for _ in range(3))
    attn_mask = torch.ones(batch, 1, 1, frames, dtype=torch.bool) if mask else None
    fused, _ = bench_utils.count_flops(lambda: nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))
    explicit, _ = bench_utils.count_flops(lambda: torch.softmax(q @ k.transpose(-1, -2), -1) @ v)
    assert fused == explicit == 2 * 2 * batch * heads * frames * frames * dim


def _expected_student_macs(config: ArmHubertConfig, samples: int, heads: bool = False) -> tuple[int, int]:
    """Hand count of one ArmHubertModel forward pass (batch 1): (conv encoder MACs, total MACs)."""
    conv, steps, channels = 0, samples, 1
    for dim, kernel, stride in zip(config.conv_dim, config.conv_kernel, config.conv_stride):
        steps = (steps - kernel) // stride + 1
        conv += steps * dim * channels * kernel
        channels = dim
    hidden, frames, ffn = config.hidden_size, steps, config.intermediate_size
    total = conv + (frames * channels * hidden if channels != hidden else 0)
    groups, kernel = config.num_conv_pos_embedding_groups, config.num_conv_pos_embeddings
    total += (frames + 2 * (kernel // 2) - kernel + 1) * hidden * (hidden // groups) * kernel
    for normal in config.reuse_pattern:
        projections = 4 if normal else 2  # q, k, v, out / v, out
        # QK^T and PV; a reuse layer in "probs" mode reruns the fused kernel on the reused queries
        # and keys, so it also computes QK^T again (cheaper on a GPU than storing the map).
        attention = 2 if normal or config.reuse_mode == "probs" else 1
        total += projections * frames * hidden * hidden + attention * frames * frames * hidden
        total += 2 * frames * hidden * ffn
    if heads:
        total += config.num_hidden_layers * frames * hidden * config.projection_dim
    return conv, total


# -- size_compute.py ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def size_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("size")
    speed = out / "speed.json"
    speed.write_text(json.dumps({"rows": [
        {"model": "hubert-base", "runtime": "pytorch", "batch": 1, "latency_ms": 800.0},
        {"model": "armhubert", "runtime": "pytorch", "batch": 1, "latency_ms": 200.0},
    ]}))
    result = size_compute.main(["--models", "armhubert", "armhubert-s", "armwavlm-s", "maskhubert", "hubert-base",
                                "--seconds", "1", "--output-dir", str(out), "--speed-json", str(speed)])
    return out, result


def test_size_compute_parameter_counts_are_the_spec_and_the_models(size_result):
    out, result = size_result
    assert json.loads((out / "size_compute.json").read_text())["rows"] == result["rows"]
    rows = {row["model"]: row for row in result["rows"]}
    for preset, (with_heads, without_heads) in PUBLISHED_PARAMETER_COUNTS.items():
        assert (rows[preset]["params_with_heads"], rows[preset]["params_without_heads"]) == (with_heads, without_heads)
    hubert = HubertModel(HubertConfig()).num_parameters()
    assert rows["hubert-base"]["params_with_heads"] == rows["hubert-base"]["params_without_heads"] == hubert
    assert rows["armhubert"]["params_pct_of_hubert_base"] == pytest.approx(100 * 26_448_448 / hubert)
    assert rows["hubert-base"]["params_pct_of_hubert_base"] == rows["hubert-base"]["macs_pct_of_hubert_base"] == 100


@pytest.mark.parametrize("preset", ["armhubert", "maskhubert"])
def test_size_compute_macs_equal_a_hand_count(size_result, preset):
    _, result = size_result
    row = next(r for r in result["rows"] if r["model"] == preset)
    config = ArmHubertConfig.from_preset(preset)
    assert row["seconds_counted"] == 1
    conv, total = _expected_student_macs(config, 16000)
    assert (row["conv_encoder_macs_per_second"], row["macs_per_second"]) == (conv, total)
    assert row["macs_per_second_with_heads"] == _expected_student_macs(config, 16000, heads=True)[1]


def test_size_compute_writes_the_plot(size_result):
    out, result = size_result
    png = out / "size_compute.png"
    assert result["plot"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- inference_speed.py ------------------------------------------------------------------------


def test_inference_speed_rows(tmp_path):
    output = tmp_path / "speed.json"
    result = inference_speed.main(["--tiny", "--models", "armhubert", "maskhubert", "--seconds", "1",
                                   "--batch-sizes", "1", "3", "--warmup", "0", "--repeats", "2", "--no-quiet-gate",
                                   "--output", str(output)])
    assert json.loads(output.read_text()) == result
    assert result["device"] == "cpu" and result["dtype"] == "fp32"
    assert result["machine"]["torch_threads"] == torch.get_num_threads()
    names = ["hubert-base", "armhubert", "armhubert + mask", "armhubert (ONNX Runtime)", "maskhubert"]
    rows = result["rows"]
    assert [(r["name"], r["batch"]) for r in rows] == [(n, b) for b in (1, 3) for n in names]
    for row in rows:
        baseline = next(r for r in rows if r["name"] == "hubert-base" and r["batch"] == row["batch"])
        assert len(row["times_ms"]) == 2
        assert row["latency_ms"] == pytest.approx(sorted(row["times_ms"])[0] / 2 + sorted(row["times_ms"])[1] / 2,
                                                  abs=1e-3)
        assert row["throughput_audio_s_per_s"] == pytest.approx(row["batch"] * 1000 / row["latency_ms"])
        assert row["speedup_vs_hubert_base"] == pytest.approx(baseline["latency_ms"] / row["latency_ms"])
    assert {r["runtime"] for r in rows} == {"pytorch", "pytorch + mask", "onnxruntime"}
    # The PyTorch size is the fp32 weights: 4 bytes per parameter and buffer, plus the file's framing.
    student = bench_utils.build_model("armhubert", tiny=True)
    weights = sum(t.numel() * 4 for t in student.state_dict().values()) / 2**20
    armhubert = next(r for r in rows if r["name"] == "armhubert")
    assert weights < armhubert["size_mib"] < weights + 0.1


def test_inference_speed_int8_rows_and_peers(tmp_path):
    result = inference_speed.main(["--tiny", "--models", "distilhubert", "--onnx-models", "armhubert", "distilhubert",
                                   "--int8", "--seconds", "1", "--batch-sizes", "2", "--warmup", "0", "--repeats", "1",
                                   "--no-quiet-gate", "--output", str(tmp_path / "int8.json")])
    rows = {row["name"]: row for row in result["rows"]}
    for model in ("armhubert", "distilhubert"):
        fp32, int8 = rows[f"{model} (ONNX Runtime)"], rows[f"{model} (ONNX Runtime int8)"]
        assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
        assert int8["size_mib"] < fp32["size_mib"]
    assert rows["armhubert (PyTorch int8)"]["precision"] == "int8"
    assert rows["armhubert (PyTorch int8)"]["size_mib"] < rows["armhubert"]["size_mib"]
    # Only the students get the masked, the int8 conv-encoder and the PyTorch int8 rows.
    conv_int8 = rows["armhubert (ONNX Runtime int8 + conv encoder)"]
    assert conv_int8["precision"] == "int8" and conv_int8["size_mib"] < rows["armhubert (ONNX Runtime)"]["size_mib"]
    assert not {"distilhubert + mask", "distilhubert (PyTorch int8)", "distilhubert (ONNX Runtime int8 + conv encoder)"} & set(rows)
    # DistilHuBERT is HuBERT with fewer layers (one in the tiny layout): same layer sizes.
    distil = bench_utils.build_model("distilhubert", tiny=True)
    hubert = bench_utils.build_model("hubert-base", tiny=True)
    assert distil.config.num_hidden_layers == 1 and hubert.config.num_hidden_layers == 2
    assert hubert.num_parameters() - distil.num_parameters() == \
        sum(p.numel() for p in hubert.encoder.layers[1].parameters())


def test_time_interleaved_runs_every_runner_round_robin():
    calls = []
    times = bench_utils.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                         warmup=1, repeats=3, gate=bench_utils.QuietGate(max_wait_s=0.2))
    # The gate may re-run a call that another process disturbed (a busy machine): a re-run repeats
    # the same runner at once, so the order without immediate repeats is still round-robin.
    rounds = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert rounds == ["a", "b"] * 4
    assert [len(v) for v in times.values()] == [3, 3]


def test_machine_info_names_the_cpus_vector_extensions(tmp_path):
    # int8 speed hangs on them: a table must say whether its CPU had VNNI.
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni\n")
    assert bench_utils.cpu_vector_extensions(cpuinfo) == ["avx2", "avx512f", "avx512_vnni"]
    assert bench_utils.cpu_vector_extensions(tmp_path / "missing") == [torch.backends.cpu.get_cpu_capability()]
    info = {**bench_utils.machine_info(), "cpu": "Some CPU", "cpu_vector_extensions": ["avx2", "avx512_vnni"]}
    assert bench_utils.describe_machine(info).startswith("Some CPU (avx2, avx512_vnni), ")


# -- distill_throughput.py ---------------------------------------------------------------------


def test_distill_throughput_variants(tmp_path):
    output = tmp_path / "distill.json"
    result = distill_throughput.main(["--tiny", "--batch-size", "2", "--seconds", "1", "--warmup", "1", "--steps", "1",
                                      "--variants", "default", "no-shared-features", "no-fused-attention", "star",
                                      "--output", str(output)])
    assert json.loads(output.read_text()) == result
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"default", "no-shared-features", "no-fused-attention", "star"}
    assert rows["star"]["objective"] == "star" and rows["default"]["objective"] == "masking"
    for row in rows.values():
        assert "error" not in row
        assert row["audio_s_per_s"] == pytest.approx(2 * 1.0 / (row["step_ms"] / 1000))
        assert torch.isfinite(torch.tensor(row["final_loss"]))
    # Running the teacher twice from the waveform adds exactly one conv encoder + feature projection pass.
    teacher = distill_throughput.build_teacher("hubert-base", tiny=True, device=torch.device("cpu"))
    values = bench_utils.random_audio(2, 1)
    extra = bench_utils.count_forward_macs(teacher.feature_extractor, values)[0]
    features = teacher.feature_extractor(values).transpose(1, 2)
    extra += bench_utils.count_forward_macs(teacher.feature_projection, features)[0]
    difference = (rows["no-shared-features"]["tflops_per_step"] - rows["default"]["tflops_per_step"]) * 1e12
    assert difference == pytest.approx(2 * extra, rel=1e-9)
    # The unfused math backend does the same matrix products as the fused kernel, except that the
    # fused backward recomputes the scores (one QK^T per fused call): a little more, never less.
    fused, unfused = rows["default"]["tflops_per_step"], rows["no-fused-attention"]["tflops_per_step"]
    assert unfused < fused < 1.05 * unfused


def test_one_benchmark_step_is_the_trainers_loss(tmp_path):
    """The benchmark's step computes the same loss as MaskingDistillationTrainer.compute_loss."""
    from armhubert_training.distillation_trainer import DistillationArguments

    args = distill_throughput.parse_args(["--tiny", "--batch-size", "2", "--seconds", "1", "--output",
                                          str(tmp_path / "x.json")])
    setup = distill_throughput.make_setup(args, distill_throughput.VARIANTS["default"], torch.device("cpu"))
    setup.student.eval()  # no dropout: the two computations must agree exactly
    values = bench_utils.random_audio(2, 1)
    attention_mask = torch.ones(values.shape, dtype=torch.long)
    attention_mask[1, 12000:] = 0
    distill = DistillationArguments()
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in setup.student.named_parameters()}
    mask = distill_throughput.batch_mask(setup, values, attention_mask, 5, distill)
    loss = distill_throughput.distillation_step(setup, values, attention_mask, mask, distill)
    assert any(not torch.equal(before[n], p) for n, p in setup.student.named_parameters())  # a real step

    # Recompute the same step's loss by hand from the trainer's building blocks, at the old weights.
    from armhubert_training.distillation_loss import masking_distillation_loss
    from modeling_armhubert import compute_span_mask

    student = ArmHubertModel(setup.student.config).eval()
    student.load_state_dict(before)
    frames = int(student._get_feat_extract_output_lengths(values.shape[1]))
    frame_mask = student._get_feature_vector_attention_mask(frames, attention_mask)
    mask = compute_span_mask((2, frames), distill.mask_prob, distill.mask_length, attention_mask=frame_mask,
                             length_distribution=distill.mask_length_distribution, min_masks=distill.mask_min_spans,
                             no_overlap=True, min_space=distill.mask_min_space,
                             generator=torch.Generator().manual_seed(5))
    unmasked, masked = setup.teacher(values, attention_mask, mask)
    outputs = student(values, attention_mask=attention_mask, mask_time_indices=mask, output_hidden_states=True)
    expected = masking_distillation_loss(list(outputs.projected_hidden_states), unmasked, masked, mask, frame_mask)
    torch.testing.assert_close(loss, expected["loss"].detach())


def test_synthetic_corpus_has_librispeech_lengths_and_layout(tmp_path):
    from armhubert_training.corpora.librispeech import librispeech_dataset
    from tools.make_synthetic_librispeech import sample_durations, write_corpus

    durations = sample_durations(20_000)
    assert 12.0 < durations.mean() < 13.5 and durations.min() >= 2.0 and durations.max() <= 35.0
    assert 0.6 < ((durations >= 10) & (durations <= 17.5)).mean() < 0.9
    short = sample_durations(7, seed=3, scale=0.05)
    write_corpus(tmp_path, short, utterances_per_chapter=4, workers=1)
    index = librispeech_dataset(tmp_path, ["train-clean-100"])
    assert len(index) == 7
    # File lengths are the drawn ones, to the sample.
    assert index["duration"] == pytest.approx([int(d * 16000) / 16000 for d in short])


def test_distill_end_to_end_measures_the_real_run(tmp_path):
    output = tmp_path / "e2e.json"
    result = distill_end_to_end.main(["--tiny", "--batch-size", "3", "--warmup", "1", "--steps", "3",
                                      "--variants", "default", "--workers", "0", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(result))
    row = result["rows"][0]
    assert "error" not in row and row["mixed_precision"] == "no" and np.isfinite(row["final_loss"])
    # Each step has 3 utterances: at most 3 x the longest, at least 3 x the shortest.
    corpus = result["corpus"]
    assert 3 * corpus["min_s"] <= row["mean_batch_audio_s"] <= 3 * corpus["max_s"]
    assert row["audio_s_per_s"] == pytest.approx(row["mean_batch_audio_s"] / (row["step_ms"] / 1000))
    assert 0 <= row["data_wait_share"] < 1 and 0 <= row["padding_share"] < 1 and row["mask_ms_per_step"] > 0
    assert result["workers_needed_for_target"] == pytest.approx(3000 / result["decode_audio_s_per_s_per_worker"])


# -- command lines -----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [size_compute, inference_speed, distill_throughput, distill_end_to_end, export_onnx,
                                    int8_accuracy],
                         ids=lambda m: m.__name__)
def test_scripts_have_help(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def test_a_script_runs_from_the_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks.size_compute", "--models", "armhubert",
                             "--seconds", "1", "--no-plot", "--output-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "| armhubert | 26.45 | 22.02 |" in result.stdout
    assert json.loads((tmp_path / "size_compute.json").read_text())["rows"][0]["params_with_heads"] == 26_448_448


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")]).returncode == 0


def test_front_end_share_splits_each_model_into_its_conv_encoder_and_the_rest(tmp_path):
    # DistilHuBERT stands for the Transformers models (HuBERT Base's conv encoder and layers, fewer of them).
    result = front_end_share.main(["--tiny", "--models", "armhubert", "distilhubert", "--threads", "1", "--seconds",
                                   "1", "--repeats", "1", "--output", str(tmp_path / "share.json")])
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in result["rows"]}
    assert set(rows) == {("armhubert", "pytorch", "fp32"), ("armhubert", "onnxruntime", "fp32"),
                         ("armhubert", "onnxruntime", "int8"), ("armhubert", "onnxruntime", "int8 + conv encoder"),
                         ("distilhubert", "pytorch", "fp32"), ("distilhubert", "onnxruntime", "fp32"),
                         ("distilhubert", "onnxruntime", "int8")}
    for row in rows.values():
        assert row["front_end_ms"] > 0 and row["total_ms"] > 0
        if row["runtime"] == "onnxruntime":  # the conv encoder's nodes are a part of the profiled ones
            assert row["front_end_ms"] < row["total_ms"]
        # (PyTorch's two are timed apart: on tiny models and one repeat, a busy machine can invert them.)
        assert row["front_end_share"] == pytest.approx(row["front_end_ms"] / row["total_ms"])
        # Nodes that ONNX Runtime names afresh (its fusions of the Transformer's norms and activations, shape
        # bookkeeping) count as the rest: never a conv or matrix product, the ops the conv encoder is made of.
        assert not set(row.get("renamed_ops", [])) & {"Conv", "MatMul", "MatMulInteger", "DynamicQuantizeMatMul",
                                                       "MatMulIntegerToFloat", "FusedMatMul", "Gelu"}


def test_front_end_layouts_compute_the_same_features_and_gradients(tmp_path):
    """Every layout of a conv encoder equals its first one in fp32: outputs and, in training, weight gradients."""
    result = front_end_layouts.main(["--tiny", "--batch-size", "2", "--seconds", "1", "--warmup", "0", "--repeats",
                                     "1", "--output", str(tmp_path / "layouts.json")])
    rows = {(r["model"], r["mode"], r["layout"]): r for r in result["rows"]}
    assert set(rows) == {("hubert-base", "inference", "transformers"), ("hubert-base", "inference", "channels-first"),
                         ("hubert-base", "inference", "channels-last"), ("armhubert", "inference", "channels-first"),
                         ("armhubert", "inference", "channels-last"), ("armhubert", "training", "channels-first"),
                         ("armhubert", "training", "channels-last")}
    for (model, mode, layout), row in rows.items():
        assert row["output_error"] < 1e-5, (model, mode, layout)
        assert (row["gradient_error"] is None) == (mode == "inference")
        if mode == "training":
            assert row["gradient_error"] < 1e-5, (model, layout)
    assert rows["hubert-base", "inference", "transformers"]["speedup"] == 1.0
    assert json.loads((tmp_path / "layouts.json").read_text())["rows"] == result["rows"]


def test_a_teachers_conv_encoder_in_armhubert_layers():
    """WavLM's conv encoder too; a layer-norm conv encoder (the Large models') has no twin."""
    torch.manual_seed(0)
    small = dict(conv_dim=(32,) * 7, hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    wavlm = WavLMModel(WavLMConfig(**small)).eval()
    twin = front_end_layouts.in_armhubert_layers(wavlm).eval()
    audio = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(twin(audio), wavlm.feature_extractor(audio), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="normalises its conv layers with 'layer'"):
        front_end_layouts.in_armhubert_layers(HubertModel(HubertConfig(**small, feat_extract_norm="layer")))
