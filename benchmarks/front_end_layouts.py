"""The conv feature encoder in each layout it can run in, on one device: time and agreement.

The conv encoder is a third or more of a forward on a CPU, and in distillation the teacher's (HuBERT
Base's: 512 channels over 32,000 steps per 10 s) runs on every step. Which
layout of the same convs is fastest depends on the device and its conv library, so this measures
them side by side, for HuBERT Base's encoder (the teacher's; DistilHuBERT's is the same) and for a
student's, on the same weights:

- `transformers`: Transformers' own `HubertFeatureEncoder` (baselines only);
- `channels-first`: `ArmHubertFeatureEncoder`'s layers on (B, C, S) activations, `conv1d` (what a
  student runs on a GPU, and for one utterance on a CPU);
- `channels-last`: the same layers as height-1 2-D convs on (B, C, 1, S) laid out as (B, S, C)
  (what a student runs for batches on a CPU; cuDNN's tensor-core kernels want this layout too).

Each layout can also run compiled (`--compile`: `torch.compile`, fixed shapes) and, on CUDA, with
cuDNN's autotuning (`--cudnn-autotune`: `torch.backends.cudnn.benchmark` on for its calls, which
times cuDNN's algorithms once per new shape, a cost that variable-length training pays per length).
Rows are timed round-robin (one call of each per round; median of `--repeats` rounds). Modes:
`inference` (no autograd, every model: the frozen teacher's and deployment's) and `training`
(forward and backward into the weights, students only: the student's front end in distillation).
bf16 is autocast over fp32 weights, as the Trainer's `--bf16` does.

Every row is also checked against the model's first layout in fp32 (TF32 off): the output's and,
in training, every weight gradient's largest difference relative to the reference's largest magnitude.

    python -m benchmarks.front_end_layouts                                # CPU, fp32, 8 x 10 s
    python -m benchmarks.front_end_layouts --device cuda --batch-size 32 --compile --cudnn-autotune

JSON goes to benchmarks/results/front_end_layouts_<device>.json unless `--output` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from benchmarks.bench_utils import (
    MODEL_NAMES, RESULTS_DIR, build_model, command_line, describe_machine, is_baseline, machine_info, median,
    random_audio, time_interleaved, write_json,
)
from benchmarks.tables import front_end_layouts_table
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertFeatureEncoder

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu).")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="fp32, or bf16 autocast over fp32 weights (default fp32 on cpu, bf16 on cuda).")
    parser.add_argument("--models", nargs="+", default=["hubert-base", "armhubert"], choices=MODEL_NAMES,
                        help="Whose conv encoders (default HuBERT Base, the teacher's, and armhubert's).")
    parser.add_argument("--batch-size", type=int, default=8, help="Utterances per call (default 8).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each utterance (default 10).")
    parser.add_argument("--modes", nargs="+", choices=["inference", "training"], default=["inference", "training"],
                        help="inference (every model) and training (students only; default both).")
    parser.add_argument("--compile", action="store_true", help="Also time each layout under torch.compile.")
    parser.add_argument("--cudnn-autotune", action="store_true",
                        help="On CUDA, also time each layout with torch.backends.cudnn.benchmark on.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed calls per row (default 2).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed rounds (default 5).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models of the same layout (tests, smoke runs).")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default benchmarks/results/front_end_layouts_<device>.json).")
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if args.device.type == "cuda" else "fp32")
    if args.cudnn_autotune and args.device.type != "cuda":
        parser.error("--cudnn-autotune is for CUDA devices (cuDNN); leave it out on a CPU.")
    if args.batch_size < 1 or args.seconds <= 0 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch-size and --repeats must be at least 1, --seconds positive, --warmup not negative.")
    args.output = args.output or RESULTS_DIR / f"front_end_layouts_{args.device.type}.json"
    return args


def in_armhubert_layers(model: nn.Module) -> ArmHubertFeatureEncoder:
    """An `ArmHubertFeatureEncoder` holding the conv encoder weights of a Transformers HuBERT / WavLM /
    wav2vec 2.0 model whose first conv has a GroupNorm (`feat_extract_norm="group"`, the Base models'):
    the layers and their parameter names are the same."""
    config = model.config
    if config.feat_extract_norm != "group":
        raise ValueError(f"{type(model).__name__} normalises its conv layers with {config.feat_extract_norm!r}; "
                         "only the Base models' layout (a GroupNorm after the first conv) has an armhubert twin.")
    arm = ArmHubertFeatureEncoder(ArmHubertConfig(
        conv_dim=list(config.conv_dim), conv_kernel=list(config.conv_kernel), conv_stride=list(config.conv_stride),
        conv_bias=config.conv_bias, feat_extract_activation=config.feat_extract_activation))
    arm.load_state_dict(model.feature_extractor.state_dict())
    return arm.to(model.device)


@dataclass
class Row:
    model: str
    mode: str
    layout: str
    compiled: bool
    cudnn_autotune: bool
    module: nn.Module  # holds the weights the call uses
    call: Callable[[], torch.Tensor]  # one timed call -> features; in training it also runs the backward

    @property
    def label(self) -> str:
        extras = [text for on, text in ((self.compiled, "compiled"), (self.cudnn_autotune, "cuDNN autotuning")) if on]
        return self.layout + (f" ({', '.join(extras)})" if extras else "")


@contextlib.contextmanager
def cudnn_flags(**flags: bool) -> Iterator[None]:
    """Set torch.backends.cudnn flags (benchmark, allow_tf32) for a block."""
    previous = {name: getattr(torch.backends.cudnn, name) for name in flags}
    for name, value in flags.items():
        setattr(torch.backends.cudnn, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(torch.backends.cudnn, name, value)


def layout_forwards(name: str, model: nn.Module) -> dict[str, tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]]:
    """layout -> (the module holding the weights, audio -> features) for one model's conv encoder."""
    encoder = model.feature_extractor
    if is_baseline(name):
        arm = in_armhubert_layers(model)
        return {"transformers": (encoder, encoder),
                "channels-first": (arm, lambda audio: arm.convs_in_layout(audio, channels_last=False)),
                "channels-last": (arm, lambda audio: arm.convs_in_layout(audio, channels_last=True))}
    return {"channels-first": (encoder, lambda audio: encoder.convs_in_layout(audio, channels_last=False)),
            "channels-last": (encoder, lambda audio: encoder.convs_in_layout(audio, channels_last=True))}


def make_call(forward: Callable[[torch.Tensor], torch.Tensor], module: nn.Module, audio: torch.Tensor,
              mode: str, bf16: bool, autotune: bool = False, tf32: bool = True) -> Callable[[], torch.Tensor]:
    """One call of `forward` on `audio` as `mode` runs it: without autograd, or forward and backward
    into `module`'s weights (their gradients set afresh)."""
    device = audio.device.type

    def precision() -> contextlib.AbstractContextManager:
        return torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def inference() -> torch.Tensor:
        with torch.inference_mode(), precision(), cudnn_flags(benchmark=autotune, allow_tf32=tf32):
            return forward(audio)

    def training() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        with cudnn_flags(benchmark=autotune, allow_tf32=tf32):
            with precision():
                features = forward(audio)
            features.float().square().mean().backward()  # a loss that reaches every weight
        return features.detach()

    return inference if mode == "inference" else training


def relative_difference(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|."""
    return float((value.float() - reference.float()).abs().max() / reference.float().abs().max().clamp_min(1e-30))


def result(row: Row) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What one call of `row` computes: features, and in training each weight's gradient."""
    features = row.call().float()
    gradients = {n: p.grad.detach().clone() for n, p in row.module.named_parameters()} if row.mode == "training" else {}
    return features, gradients


def measure(name: str, args: argparse.Namespace, audio: torch.Tensor) -> list[dict[str, Any]]:
    """Every layout of one model's conv encoder, per mode: timed together, checked against fp32."""
    model = build_model(name, tiny=args.tiny).to(args.device)
    layouts = layout_forwards(name, model)
    rows = []
    for mode in args.modes:
        if mode == "training" and is_baseline(name):
            continue  # a teacher is frozen
        for module, _ in layouts.values():
            module.train(mode == "training")
        first_module, first_forward = next(iter(layouts.values()))
        reference = result(Row(name, mode, "reference", False, False, first_module,
                               make_call(first_forward, first_module, audio, mode, bf16=False, tf32=False)))
        mode_rows = [
            Row(name, mode, layout, compiled, autotune, module,
                make_call(torch.compile(forward, dynamic=False) if compiled else forward, module, audio, mode,
                          bf16=args.dtype == "bf16", autotune=autotune))
            for layout, (module, forward) in layouts.items()
            for compiled in ((False, True) if args.compile else (False,))
            for autotune in ((False, True) if args.cudnn_autotune else (False,))
        ]
        times = time_interleaved({row.label: row.call for row in mode_rows}, warmup=args.warmup,
                                 repeats=args.repeats, device=args.device)
        first_ms = 1000 * median(times[mode_rows[0].label])
        for row in mode_rows:
            features, gradients = result(row)
            ms = 1000 * median(times[row.label])
            rows.append({"model": name, "mode": mode, "layout": row.layout, "compiled": row.compiled,
                         "cudnn_autotune": row.cudnn_autotune, "label": row.label, "ms": ms,
                         "speedup": first_ms / ms, "output_error": relative_difference(features, reference[0]),
                         "gradient_error": max((relative_difference(gradients[n], g) for n, g in reference[1].items()),
                                               default=None)})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    audio = random_audio(args.batch_size, args.seconds, seed=1, device=args.device)
    result_json: dict[str, Any] = {
        "benchmark": "front_end_layouts", "command": command_line(__file__, argv),
        "machine": machine_info(args.device), "device": args.device.type, "dtype": args.dtype,
        "batch_size": args.batch_size, "seconds": args.seconds, "repeats": args.repeats, "tiny": args.tiny, "rows": []}
    for name in args.models:
        result_json["rows"] += measure(name, args, audio)
        write_json(args.output, result_json)  # after each model: a run cut short keeps what it measured
    print(f"{args.batch_size} x {args.seconds:g} s, {args.dtype}, {describe_machine(result_json['machine'])}")
    print(front_end_layouts_table(result_json["rows"]))
    return result_json


if __name__ == "__main__":
    main()
