"""Inference latency and throughput of the students against HuBERT Base, in one process.

Every model gets the same input (random audio, `--seconds` long, no padding) at the same
precision, and is timed round-robin with the others (one call of each per round, after warm-up),
so a busy machine slows all of them alike. On a CPU, each timed call also waits until other
processes are idle and is re-run when they used the CPU meanwhile (`bench_utils.QuietGate`; the
JSON says how many calls were re-run), because on a small shared machine another process's burst
can double a call's time. Reported per model and batch size: the median latency
of one forward call, the throughput in seconds of audio per second, and the speed-up over HuBERT
Base at the same batch size (HuBERT Base median / model median). Students run without their
distillation heads (the network users deploy).

On a CPU (fp32) the ONNX Runtime exports of the `--onnx-models` (export_onnx.py) are timed as
well, with the same number of threads; they take an `attention_mask` input, so the PyTorch students
are also timed with an all-ones mask ("+ mask") for a like-for-like comparison (eager inference drops
such a mask, so the row shows what passing one costs: nothing beyond the input checks). With `--int8` the
same models are also timed as int8 (armhubert_training/quantization.py): ONNX Runtime's dynamic
quantisation of the exported model, for the students also with their conv encoder quantised
(`export_onnx --int8-conv-encoder`), and PyTorch's dynamic quantisation of the Linear layers. Each
row also gives the size of the weights on disk (ONNX file, or PyTorch state dict).

    python -m benchmarks.inference_speed                        # CPU fp32: batch 1 and 8 x 10 s, + ONNX Runtime
    python -m benchmarks.inference_speed --device cuda          # GPU bf16: batch 1 and 32 x 10 s
    python -m benchmarks.inference_speed --int8 --models armhubert distilhubert \
        --onnx-models armhubert distilhubert hubert-base       # int8 and the peers

JSON goes to benchmarks/results/inference_speed_<device>.json (inference_speed_cpu_int8.json with
`--int8`) unless `--output` says otherwise.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from armhubert_training.quantization import quantize_linear_layers, quantize_onnx_int8
from benchmarks.bench_utils import (
    DISTINCT_PRESETS, MODEL_NAMES, RESULTS_DIR, QuietGate, build_model, command_line, describe_machine, is_baseline,
    machine_info, median, random_audio, time_interleaved, write_json,
)
from benchmarks.tables import inference_speed_table

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BASELINE = "hubert-base"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="Precision of weights and inputs (default fp32 on cpu, bf16 on cuda).")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="Batch sizes (default 1 8 on cpu, 1 32 on cuda).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each utterance (default 10).")
    parser.add_argument("--models", nargs="+", default=[*DISTINCT_PRESETS, "distilhubert"], choices=MODEL_NAMES,
                        help="Models timed in PyTorch next to HuBERT Base (default: the three distinct preset "
                             "networks, armwavlm-s being armhubert-s's network, and DistilHuBERT).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed calls per model (default 2 cpu, 5 cuda).")
    parser.add_argument("--repeats", type=int, default=None, help="Timed rounds (default 9 cpu, 30 cuda).")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch and ONNX Runtime (default: torch's default).")
    parser.add_argument("--onnx-models", nargs="+", default=["armhubert"], choices=[*MODEL_NAMES, "none"],
                        help="Models also exported and timed through ONNX Runtime on a CPU ('none' to skip; "
                             "default armhubert).")
    parser.add_argument("--int8", action="store_true",
                        help="Also time the --onnx-models as int8: ONNX Runtime dynamic quantisation, and for the "
                             "students PyTorch dynamic quantisation of the Linear layers (CPU fp32 runs only).")
    parser.add_argument("--no-quiet-gate", action="store_true",
                        help="On a CPU, do not wait for (and re-run calls disturbed by) other processes' CPU work.")
    parser.add_argument("--compile", action="store_true", help="torch.compile every PyTorch model first.")
    parser.add_argument("--tiny", action="store_true", help="Tiny models of the same layout (tests, smoke runs).")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default benchmarks/results/inference_speed_<device>.json).")
    args = parser.parse_args(argv)
    on_gpu = torch.device(args.device).type == "cuda"
    args.dtype = args.dtype or ("bf16" if on_gpu else "fp32")
    args.batch_sizes = args.batch_sizes or ([1, 32] if on_gpu else [1, 8])
    args.warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 2)
    args.repeats = args.repeats if args.repeats is not None else (30 if on_gpu else 9)
    if on_gpu or args.dtype != "fp32" or "none" in args.onnx_models:
        args.onnx_models, args.int8 = [], False
    suffix = "_int8" if args.int8 else ""
    args.output = args.output or RESULTS_DIR / f"inference_speed_{torch.device(args.device).type}{suffix}.json"
    return args


@dataclass
class Runner:
    """One timed row: which model, on which runtime and precision, how big on disk, and how to call it."""

    model: str
    runtime: str  # pytorch, pytorch + mask, onnxruntime
    precision: str  # the dtype's name, or int8
    size_mib: float | None  # the weights as stored: ONNX file, or PyTorch state dict
    make_call: Callable[[torch.Tensor, torch.Tensor], Callable[[], Any]]  # (audio, mask) -> call()


def state_dict_mib(model: torch.nn.Module) -> float:
    """Size of the saved weights (torch.save of the state dict, as int8 packs for a quantised model)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 2**20


def pytorch_runner(name: str, model: torch.nn.Module, precision: str, runtime: str = "pytorch") -> Runner:
    def make_call(audio: torch.Tensor, mask: torch.Tensor):
        kwargs = {"attention_mask": mask} if runtime == "pytorch + mask" else {}

        def call():
            with torch.inference_mode():
                return model(audio, **kwargs)
        return call

    return Runner(name, runtime, precision, state_dict_mib(model), make_call)


def onnx_runner(name: str, path: Path) -> tuple[Runner, Any]:
    from armhubert_training.export_onnx import onnx_session

    session = onnx_session(path, threads=torch.get_num_threads())

    def make_call(audio: torch.Tensor, mask: torch.Tensor):
        feeds = {"input_values": audio.numpy(), "attention_mask": mask.numpy()}
        return lambda: session.run(None, feeds)

    precision = "int8" if path.name.endswith(".int8.onnx") else "fp32"
    return Runner(name, "onnxruntime", precision, path.stat().st_size / 2**20, make_call), session


def build_runners(args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
                  workdir: Path) -> tuple[dict[str, Runner], dict[str, Any]]:
    """Row name -> Runner, in timing order; plus notes for the JSON.

    Per model: PyTorch at `--dtype`; for the `--onnx-models` also ONNX Runtime fp32 (and the PyTorch
    student with an all-ones mask, like the ONNX input), and with `--int8` ONNX Runtime int8 and
    PyTorch int8 (dynamic quantisation of the Linear layers; students only).
    """
    names = [BASELINE] + [m for m in args.models if m != BASELINE]
    names += [m for m in args.onnx_models if m not in names]
    runners: dict[str, Runner] = {}
    notes: dict[str, Any] = {}
    for name in names:
        model = build_model(name, tiny=args.tiny).to(device=device, dtype=dtype)
        if name == BASELINE:
            notes["baseline_attention"] = getattr(model.config, "_attn_implementation", None)
        forward = torch.compile(model) if args.compile else model
        runners[name] = pytorch_runner(name, forward, args.dtype)
        if name not in args.onnx_models:
            continue
        if not is_baseline(name):
            runners[f"{name} + mask"] = pytorch_runner(name, forward, args.dtype, runtime="pytorch + mask")
        from armhubert_training.export_onnx import export_int8_conv_encoder, export_student

        fp32_path = export_student(model, workdir / f"{name}.onnx")
        runners[f"{name} (ONNX Runtime)"], _ = onnx_runner(name, fp32_path)
        if args.int8:
            int8_path = quantize_onnx_int8(fp32_path, workdir / f"{name}.int8.onnx")
            runners[f"{name} (ONNX Runtime int8)"], _ = onnx_runner(name, int8_path)
            if not is_baseline(name):  # offered for the students only (README)
                conv_int8_path = export_int8_conv_encoder(model, workdir / f"{name}.convs_as_matmul.int8.onnx")
                runners[f"{name} (ONNX Runtime int8 + conv encoder)"], _ = onnx_runner(name, conv_int8_path)
                runners[f"{name} (PyTorch int8)"] = pytorch_runner(name, quantize_linear_layers(model), "int8")
    return runners, notes


def peak_memory_mib(call: Callable, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    rows: list[dict[str, Any]] = []
    gate = QuietGate() if device.type == "cpu" and not args.no_quiet_gate else None
    with tempfile.TemporaryDirectory() as workdir:
        runners, notes = build_runners(args, device, dtype, Path(workdir))
        for batch in args.batch_sizes:
            audio = random_audio(batch, args.seconds, seed=batch, device=device, dtype=dtype)
            mask = torch.ones(audio.shape, dtype=torch.long, device=device)
            calls = {key: runner.make_call(audio, mask) for key, runner in runners.items()}
            times = time_interleaved(calls, args.warmup, args.repeats, device, gate)
            baseline = median(times[BASELINE])
            for key, runner in runners.items():
                latency = median(times[key])
                rows.append({
                    "name": key, "model": runner.model, "runtime": runner.runtime, "precision": runner.precision,
                    "size_mib": runner.size_mib, "batch": batch, "seconds": args.seconds,
                    "latency_ms": 1000 * latency,
                    "latency_min_ms": 1000 * min(times[key]),
                    "throughput_audio_s_per_s": batch * args.seconds / latency,
                    "speedup_vs_hubert_base": baseline / latency,
                    "peak_memory_mib": peak_memory_mib(calls[key], device),
                    "times_ms": [round(1000 * t, 3) for t in times[key]],
                })
            del calls, audio, mask
    result = {
        "benchmark": "inference_speed",
        "command": command_line(__file__, argv),
        "machine": machine_info(device),
        "device": device.type,
        "dtype": args.dtype,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "compile": args.compile,
        "tiny": args.tiny,
        "quiet_gate": gate.summary() if gate is not None else None,
        **notes,
        "rows": rows,
    }
    write_json(args.output, result)
    print(f"{device.type} {args.dtype}, {args.seconds:g} s utterances, median of {args.repeats} interleaved rounds; "
          f"{describe_machine(result['machine'])}")
    print(inference_speed_table(rows))
    return result


if __name__ == "__main__":
    main()
