"""Where a forward pass spends its time on a CPU: the conv feature encoder's share, per model and runtime.

For one utterance (`--seconds`, default 10) at each `--threads` setting, per model:

- PyTorch fp32: the feature encoder called alone and the whole model, timed in turn (median of
  `--repeats` rounds); the share is the ratio of the medians.
- ONNX Runtime fp32, int8 (Linear layers), and for the students int8 with the conv encoder too
  (`export_onnx --int8-conv-encoder`): ONNX Runtime's own profile of `--repeats` calls, each node's
  kernel time assigned to the conv encoder or to the rest by the PyTorch module it was exported from
  (the exporter's `name_scopes`, which quantised and fused nodes inherit by name).

The rows show how much of each model the conv encoder is, before (fp32 convs) and after (int8 convs)
quantising it, next to HuBERT Base and DistilHuBERT, whose conv encoder is HuBERT Base's.

    python -m benchmarks.front_end_share --threads 1 2

JSON goes to benchmarks/results/front_end_share_cpu.json unless `--output` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from armhubert_training.export_onnx import export_student, onnx_session
from armhubert_training.quantization import quantize_onnx_int8
from benchmarks.bench_utils import (
    RESULTS_DIR, build_model, command_line, describe_machine, is_baseline, machine_info, median, random_audio,
    time_interleaved, write_json,
)
from benchmarks.tables import front_end_share_table

FRONT_END_SCOPE = "feature_extractor"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["armhubert", "distilhubert", "hubert-base"],
                        help="Models (default: armhubert, DistilHuBERT and HuBERT Base, random weights).")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="Thread counts (default 1 2).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the utterance (default 10).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per row (default 5, after one warm-up).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models of the same layout (tests, smoke runs).")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "front_end_share_cpu.json", help="JSON file.")
    return parser.parse_args(argv)


def node_modules(path: Path) -> dict[str, str]:
    """ONNX node name -> the module path it was exported from ('' when unknown)."""
    import onnx

    modules = {}
    for node in onnx.load(str(path)).graph.node:
        scope = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        modules[node.name] = scope
    return modules


def profiled_share(path: Path, feeds: dict[str, Any], threads: int, repeats: int, modules: dict[str, str],
                   profile_dir: Path) -> dict[str, float]:
    """Kernel time per call (ms) of the conv encoder's nodes and of all nodes, from ONNX Runtime's profile.

    `modules` maps the fp32 export's node names to their modules: a quantised node is named after the
    node it replaced (`node_linear_3` -> `node_linear_3_quant...`), most fused ones after their first
    node. The nodes ONNX Runtime names afresh (listed in `renamed_ops`: BiasGelu, the Transformer's
    feed-forward activations, and a few Gathers of shape bookkeeping) count as the rest."""
    session = onnx_session(path, threads, enable_profiling=True, profile_file_prefix=str(profile_dir / path.stem))
    session.run(None, feeds)  # warm-up, left out below
    for _ in range(repeats):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    warmup_end = runs[0]["ts"] + runs[0]["dur"]
    front, total, renamed_ops = 0.0, 0.0, set()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time") or event["ts"] < warmup_end:
            continue
        name = re.sub(r"_quant.*$", "", event["name"].removesuffix("_kernel_time").split("/")[0])
        total += event["dur"]
        if name not in modules:  # a node ONNX Runtime fused and named afresh
            renamed_ops.add(event["args"]["op_name"])
        elif FRONT_END_SCOPE in modules[name]:
            front += event["dur"]
    per_call_us = 1000 * repeats
    return {"front_end_ms": front / per_call_us, "total_ms": total / per_call_us, "renamed_ops": sorted(renamed_ops)}


def pytorch_share(model: torch.nn.Module, audio: torch.Tensor, repeats: int) -> dict[str, float]:
    with torch.inference_mode():
        times = time_interleaved({"front_end": lambda: model.feature_extractor(audio), "total": lambda: model(audio)},
                                 warmup=1, repeats=repeats)
    return {"front_end_ms": 1000 * median(times["front_end"]), "total_ms": 1000 * median(times["total"])}


def measure(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    model = build_model(name, tiny=args.tiny)
    audio = random_audio(1, args.seconds, seed=1)
    feeds = {"input_values": audio.numpy(), "attention_mask": torch.ones(audio.shape, dtype=torch.long).numpy()}
    fp32 = export_student(model, workdir / f"{name}.onnx")
    variants = [("onnxruntime", "fp32", fp32, fp32),
                ("onnxruntime", "int8", quantize_onnx_int8(fp32, workdir / f"{name}.int8.onnx"), fp32)]
    if not is_baseline(name):
        matmul = export_student(model, workdir / f"{name}.convs_as_matmul.onnx", convs_as_matmul=True)
        variants.append(("onnxruntime", "int8 + conv encoder",
                         quantize_onnx_int8(matmul, workdir / f"{name}.convs_as_matmul.int8.onnx"), matmul))
    rows = []
    default_threads = torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads)
        try:
            measured = [("pytorch", "fp32", pytorch_share(model, audio, args.repeats))]
        finally:
            torch.set_num_threads(default_threads)
        for runtime, precision, path, source in variants:
            share = profiled_share(path, feeds, threads, args.repeats, node_modules(source), workdir)
            measured.append((runtime, precision, share))
        for runtime, precision, share in measured:
            rows.append({"model": name, "runtime": runtime, "precision": precision, "threads": threads,
                         "seconds": args.seconds, **share, "front_end_share": share["front_end_ms"] / share["total_ms"]})
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            rows += measure(name, args, Path(workdir))
    rows.sort(key=lambda row: row["threads"])
    result = {"benchmark": "front_end_share", "command": command_line(__file__, argv), "machine": machine_info(),
              "repeats": args.repeats, "tiny": args.tiny, "rows": rows}
    write_json(args.output, result)
    print(f"1 x {args.seconds:g} s, {describe_machine(result['machine'])}")
    print(front_end_share_table(rows))
    return result


if __name__ == "__main__":
    main()
