"""Throughput of masking distillation: one training step, with each optimisation on and off.

One step is what `MaskingDistillationTrainer` does per batch (distillation_trainer.py): take the
span mask that came with the batch (drawn before the timed step, as the collator draws it in a
DataLoader worker), run the frozen teacher unmasked and masked (`teacher.FrozenTeacher`), run the student with the same mask, the masking-distillation loss,
backward, gradient clipping (the Trainer's max_grad_norm 1.0) and an AdamW step (the recipe's
betas and eps). Mixed precision is autocast, as the Trainer's `--bf16` does: fp32 weights, bf16
matrix products.

Reported per variant: seconds of audio distilled per second (batch x length / median step
time), the step time, the peak GPU memory, and the achieved TFLOP/s (FLOPs of one step,
counted by FlopCounterMode on an eager step of the same settings, forward and backward, over
the median step time).

Variants (each changes one thing from `default`, run_distill.py's defaults):
  default             shared teacher features, the teacher's positional conv from spectra, fused
                      attention (SDPA kernels), eager
  direct-positional-conv  the teacher's own positional conv (teacher_positional_conv_from_spectra false)
  no-shared-features  the teacher runs twice from the waveform (share_teacher_features false)
  no-fused-attention  every scaled_dot_product_attention call limited to the unfused math backend
  compile-student     torch.compile(student), what the Trainer's --torch_compile does
  compile-all         also the teacher's conv encoder and each of its layers compiled

    python -m benchmarks.distill_throughput --device cuda          # HuBERT Base teacher, armhubert, 32 x 10 s, bf16
    python -m benchmarks.distill_throughput --tiny --steps 2       # tiny CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from armhubert_training.distillation_loss import masking_distillation_loss
from armhubert_training.distillation_trainer import DistillationArguments, distillation_mask
from armhubert_training.teacher import FrozenTeacher, default_layer_map
from armhubert_training.temporal_relation_loss import star_loss
from benchmarks.bench_utils import (
    RESULTS_DIR, TINY_BASELINE, TINY_STUDENT, command_line, count_flops, describe_machine, machine_info,
    random_audio, synchronize, write_json,
)
from benchmarks.tables import distill_throughput_table
from configuration_armhubert import PRESETS, ArmHubertConfig
from modeling_armhubert import ArmHubertModel

VARIANTS = {
    "default": dict(share_features=True, fused_attention=True, compile="none", objective="masking"),
    "direct-positional-conv": dict(share_features=True, fused_attention=True, compile="none", objective="masking",
                                   positional_conv_from_spectra=False),
    "no-shared-features": dict(share_features=False, fused_attention=True, compile="none", objective="masking"),
    "no-fused-attention": dict(share_features=True, fused_attention=False, compile="none", objective="masking"),
    "compile-student": dict(share_features=True, fused_attention=True, compile="student", objective="masking"),
    "compile-all": dict(share_features=True, fused_attention=True, compile="all", objective="masking"),
    # The STaR objective (--objective star): one unmasked teacher pass, temporal Gram losses on layer outputs.
    "star": dict(share_features=True, fused_attention=True, compile="none", objective="star"),
}
TARGET_AUDIO_S_PER_S = 3000  # armhubert from a HuBERT Base-sized teacher on one H100/H200, bf16


@dataclass
class Setup:
    teacher: FrozenTeacher
    student: ArmHubertModel
    forward: Any  # the student, or its compiled version
    optimizer: torch.optim.Optimizer
    device: torch.device
    autocast_dtype: torch.dtype | None
    fused_attention: bool
    objective: str  # "masking" or "star"


def build_teacher(name: str, tiny: bool, device: torch.device) -> torch.nn.Module:
    from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

    config_class, model_class = {"hubert-base": (HubertConfig, HubertModel),
                                 "wavlm-base": (WavLMConfig, WavLMModel)}[name]
    torch.manual_seed(0)
    # mask_time_prob > 0: Transformers then creates the mask embedding the masked pass writes.
    config = config_class(**(TINY_BASELINE if tiny else {}), mask_time_prob=0.05)
    return model_class(config).to(device).eval().requires_grad_(False)


def build_student(preset: str, teacher_hidden: int, teacher_layers: int, tiny: bool) -> ArmHubertModel:
    overrides: dict[str, Any] = {"projection_dim": teacher_hidden, "mask_time_prob": 0.0}
    if tiny:
        layers = min(TINY_STUDENT["num_hidden_layers"], teacher_layers)
        pattern = [True] * layers if all(PRESETS[preset]["reuse_pattern"]) else ([True, False] * layers)[:layers]
        overrides.update({**TINY_STUDENT, "num_hidden_layers": layers, "reuse_pattern": pattern,
                          "projection_dim": teacher_hidden})
    torch.manual_seed(0)
    return ArmHubertModel(ArmHubertConfig.from_preset(preset, **overrides))


def compile_teacher(teacher: FrozenTeacher) -> None:
    """Compile the teacher's conv encoder, feature projection and each layer's forward in place.

    FrozenTeacher catches layer outputs with forward hooks added per call; compiling the layers'
    `forward` (not the modules) keeps those hooks outside the compiled code.
    """
    model = teacher.model
    for module in (model.feature_extractor, model.feature_projection, *model.encoder.layers):
        module.forward = torch.compile(module.forward)


def make_setup(args: argparse.Namespace, variant: dict[str, Any], device: torch.device) -> Setup:
    teacher_model = build_teacher(args.teacher, args.tiny, device)
    student = build_student(args.student, teacher_model.config.hidden_size, teacher_model.config.num_hidden_layers,
                            args.tiny)
    layers = default_layer_map(student.config.num_hidden_layers, teacher_model.config.num_hidden_layers)
    teacher = FrozenTeacher(teacher_model, layers=layers, share_features=variant["share_features"],
                            positional_conv_from_spectra=variant.get("positional_conv_from_spectra", True))
    student = student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-6)
    forward = student
    if variant["compile"] != "none":
        torch._dynamo.reset()  # each compiled variant starts from an empty cache
    if variant["compile"] in ("student", "all"):
        forward = torch.compile(student)
    if variant["compile"] == "all":
        # One compiled graph per teacher layer instance: allow more than dynamo's default of 8.
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, limit, max(getattr(config, limit), 64))
        compile_teacher(teacher)
    autocast_dtype = {"bf16": torch.bfloat16, "fp32": None}[args.dtype]
    return Setup(teacher, student, forward, optimizer, device, autocast_dtype, variant["fused_attention"],
                 variant["objective"])


def _autocast(setup: Setup):
    if setup.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(setup.device.type, dtype=setup.autocast_dtype)


def _attention_backends(setup: Setup):
    if setup.fused_attention:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def frame_mask_of(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The student's real frames of the batch, (B, T) bool."""
    frames = int(setup.student._get_feat_extract_output_lengths(values.shape[1]))
    return setup.student._get_feature_vector_attention_mask(frames, attention_mask)


def batch_mask(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor, step: int,
               distill: DistillationArguments) -> torch.Tensor:
    """The span mask of a step's batch, drawn as the collator draws it (on the CPU, before the step)."""
    frame_mask = frame_mask_of(setup, values, attention_mask)
    return distillation_mask(distill, frame_mask.cpu(), torch.Generator().manual_seed(step)).to(values.device)


def distillation_step(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                      distill: DistillationArguments) -> torch.Tensor:
    """One optimisation step of the variant's objective (mirrors MaskingDistillationTrainer.compute_loss):
    masking distillation with the batch's span `mask`, or STaR (which ignores it)."""
    record = torch.profiler.record_function
    student = setup.student
    with _attention_backends(setup):
        frame_mask = frame_mask_of(setup, values, attention_mask)
        objective_loss = star_step_loss if setup.objective == "star" else masking_step_loss
        loss = objective_loss(setup, values, attention_mask, frame_mask, mask, distill)
        with record("student backward"):
            loss.backward()
        with record("optimizer"):
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            setup.optimizer.step()
            setup.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def masking_step_loss(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor, frame_mask: torch.Tensor,
                      mask: torch.Tensor, distill: DistillationArguments) -> torch.Tensor:
    """The teacher unmasked and masked, the masked student, the masking-distillation loss."""
    record = torch.profiler.record_function
    with record("teacher"), _autocast(setup):
        teacher_unmasked, teacher_masked = setup.teacher(values, attention_mask, mask)
    with record("student forward"), _autocast(setup):
        outputs = setup.forward(values, attention_mask=attention_mask, mask_time_indices=mask,
                                output_hidden_states=True)
    with record("loss"):
        # The Trainer's accelerate wrapper hands fp32 outputs to the loss.
        projected = [p.float() for p in outputs.projected_hidden_states]
        return masking_distillation_loss(projected, teacher_unmasked, teacher_masked, mask, frame_mask,
                                         hint_weight=distill.hint_weight, last_weight=distill.last_weight,
                                         loss_type=distill.loss_type)["loss"]


def star_step_loss(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor, frame_mask: torch.Tensor,
                   mask: torch.Tensor, distill: DistillationArguments) -> torch.Tensor:
    """The teacher unmasked, the student unmasked, the STaR loss on the layer outputs (`mask` is unused)."""
    record = torch.profiler.record_function
    with record("teacher"), _autocast(setup):
        teacher_layers, _ = setup.teacher(values, attention_mask, None)
    with record("student forward"), _autocast(setup):
        outputs = setup.forward(values, attention_mask=attention_mask, output_hidden_states=True)
    with record("loss"):
        return star_loss([h.float() for h in outputs.hidden_states[1:]], teacher_layers, frame_mask,
                         terms=distill.star_loss_terms, normalisation=distill.star_normalisation,
                         chunk_frames=distill.star_chunk_frames)["loss"]


def count_step_flops(setup: Setup, values: torch.Tensor, attention_mask: torch.Tensor,
                     distill: DistillationArguments) -> int:
    """FLOPs of one distillation step (forward and backward matrix products and convolutions)."""
    mask = batch_mask(setup, values, attention_mask, 0, distill)
    flops, _ = count_flops(lambda: distillation_step(setup, values, attention_mask, mask, distill))
    return flops


def run_variant(name: str, args: argparse.Namespace, device: torch.device, values: torch.Tensor,
                attention_mask: torch.Tensor, distill: DistillationArguments) -> dict[str, Any]:
    variant = VARIANTS[name]
    # FLOPs of one step with the same settings, counted eagerly (compiling changes no arithmetic).
    flops = count_step_flops(make_setup(args, {**variant, "compile": "none"}, device), values, attention_mask, distill)
    _free(device)

    setup = make_setup(args, variant, device)
    masks = [batch_mask(setup, values, attention_mask, step, distill) for step in range(args.warmup + args.steps)]
    start = time.perf_counter()
    for step in range(args.warmup):
        distillation_step(setup, values, attention_mask, masks[step], distill)
    synchronize(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(args.warmup, args.warmup + args.steps):
        synchronize(device)
        begin = time.perf_counter()
        loss = distillation_step(setup, values, attention_mask, masks[step], distill)
        synchronize(device)
        times.append(time.perf_counter() - begin)
        losses.append(loss)
    step_s = statistics.median(times)
    batch, samples = values.shape
    audio_seconds = batch * samples / 16000
    row = {
        "variant": name, **variant,
        "batch": batch, "seconds": samples / 16000,
        "step_ms": 1000 * step_s,
        "audio_s_per_s": audio_seconds / step_s,
        "tflops_per_step": flops / 1e12,
        "achieved_tflop_s": flops / step_s / 1e12,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "warmup_s": warmup_s,
        "final_loss": float(losses[-1]),
        "step_times_ms": [round(1000 * t, 2) for t in times],
    }
    if args.profile and name == args.variants[0]:
        row["profile"] = str(profile_steps(setup, values, attention_mask, distill, args, name))
    del setup
    _free(device)
    return row


def profile_steps(setup: Setup, values, attention_mask, distill, args, name: str, steps: int = 2) -> Path:
    """torch.profiler over `steps` steps; writes the ops and the step's phases sorted by device time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    masks = [batch_mask(setup, values, attention_mask, 1000 + step, distill) for step in range(steps)]
    with profile(activities=activities, record_shapes=True) as prof:
        for mask in masks:
            distillation_step(setup, values, attention_mask, mask, distill)
        synchronize(setup.device)
    sort = "self_device_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    phases = "device_time_total" if setup.device.type == "cuda" else "cpu_time_total"
    events = prof.key_averages()
    text = (f"# {steps} steps of variant {name}\n\n## phases (record_function ranges)\n"
            + events.table(sort_by=phases, row_limit=12, max_name_column_width=50)
            + "\n## ops by self time\n" + events.table(sort_by=sort, row_limit=30, max_name_column_width=50)
            + "\n## ops by self time and input shapes\n"
            + prof.key_averages(group_by_input_shape=True).table(sort_by=sort, row_limit=25,
                                                                 max_name_column_width=50,
                                                                 max_shapes_column_width=80))
    path = args.output.with_name(f"{args.output.stem}_profile_{name}.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                        help="Autocast precision (default bf16 on cuda, fp32 on cpu).")
    parser.add_argument("--teacher", choices=["hubert-base", "wavlm-base"], default="hubert-base",
                        help="Random-weight teacher from Transformers' default config (default hubert-base).")
    parser.add_argument("--student", choices=sorted(PRESETS), default="armhubert", help="Student preset.")
    parser.add_argument("--batch-size", type=int, default=None, help="Utterances per step (default 32 cuda, 2 cpu).")
    parser.add_argument("--seconds", type=float, default=None, help="Utterance length (default 10 cuda, 2 cpu).")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="Which variants to run (default all).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps per variant (default 3).")
    parser.add_argument("--steps", type=int, default=10, help="Timed steps per variant (default 10).")
    parser.add_argument("--profile", action="store_true",
                        help="Also profile 2 steps of the first variant (writes a text table next to the JSON).")
    parser.add_argument("--tiny", action="store_true", help="Tiny teacher and student (tests, smoke runs).")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default benchmarks/results/distill_throughput_<device>.json).")
    args = parser.parse_args(argv)
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.batch_size = args.batch_size or (32 if on_gpu else 2)
    args.seconds = args.seconds or (10.0 if on_gpu else 2.0)
    args.output = args.output or RESULTS_DIR / f"distill_throughput_{torch.device(args.device).type}.json"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    values = random_audio(args.batch_size, args.seconds, device=device)
    attention_mask = torch.ones(values.shape, dtype=torch.long, device=device)
    distill = DistillationArguments()
    rows: list[dict[str, Any]] = []
    result = {
        "benchmark": "distill_throughput",
        "command": command_line(__file__, argv),
        "machine": machine_info(device),
        "device": device.type,
        "dtype": args.dtype,
        "teacher": args.teacher + (" (tiny)" if args.tiny else ""),
        "student": args.student + (" (tiny)" if args.tiny else ""),
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "steps": args.steps,
        "target_audio_s_per_s": TARGET_AUDIO_S_PER_S,
        "default_meets_target": None,
        "rows": rows,
    }
    for name in args.variants:
        try:
            rows.append(run_variant(name, args, device, values, attention_mask, distill))
        except Exception as error:  # one failing variant (e.g. a compiler error) must not lose the others
            rows.append({"variant": name, **VARIANTS[name], "error": f"{type(error).__name__}: {error}"[:2000]})
        _free(device)  # outside the except clause, once the traceback no longer holds the failed variant's tensors
        print(_row_line(rows[-1]), flush=True)
        default = next((r for r in rows if r["variant"] == "default" and "error" not in r), None)
        if default is not None:
            result["default_meets_target"] = default["audio_s_per_s"] >= TARGET_AUDIO_S_PER_S
        write_json(args.output, result)  # after every variant: a run cut short keeps what it measured
    print(f"\n{device.type} {args.dtype}; teacher {result['teacher']}, student {result['student']}, "
          f"batch {args.batch_size} x {args.seconds:g} s; {describe_machine(result['machine'])}")
    print(distill_throughput_table(rows))
    return result


def _row_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['variant']}: FAILED {row['error'][:300]}"
    return (f"{row['variant']}: {row['audio_s_per_s']:.1f} audio s/s, step {row['step_ms']:.1f} ms, "
            f"{row['achieved_tflop_s']:.2f} TFLOP/s")


if __name__ == "__main__":
    main()
