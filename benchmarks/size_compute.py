"""Size and compute of the student presets next to HuBERT Base and WavLM Base.

For each model: parameters with and without the distillation heads, and multiply-accumulates
(MACs) per second of audio of one inference forward pass, counted by PyTorch's FlopCounterMode
on a real forward pass of `--seconds` of audio (MACs = counted FLOPs / 2; matrix products,
convolutions and attention; elementwise work is not counted) and divided by the duration.
Students are measured without heads (the network users deploy); the "with heads" column adds the
12 projections used only while distilling. HuBERT Base and WavLM Base are Transformers'
`HubertModel(HubertConfig())` and `WavLMModel(WavLMConfig())` with random weights.

    python -m benchmarks.size_compute                      # table, results/size_compute.json and .png
    python -m benchmarks.size_compute --models armhubert hubert-base --seconds 1 --no-plot

The plot puts each model's parameters, MACs and CPU latency (batch 1 x 10 s, read from
`--speed-json`, written by benchmarks/inference_speed.py) as a share of HuBERT Base's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from benchmarks.bench_utils import (
    MODEL_NAMES, RESULTS_DIR, build_model, command_line, count_forward_macs, is_baseline, machine_info,
    random_audio, write_json,
)
from benchmarks.tables import size_compute_table

REFERENCE = "hubert-base"


def measure(name: str, seconds: float, tiny: bool = False) -> dict[str, Any]:
    """Parameters and MACs per second of audio of one model."""
    deployed = build_model(name, heads=False, tiny=tiny)
    audio = random_audio(1, seconds)
    macs, per_module = count_forward_macs(deployed, audio)
    conv_macs = sum(v for k, v in per_module.items() if k.count(".") == 1 and k.endswith(".feature_extractor"))
    row: dict[str, Any] = {
        "model": name,
        "params_without_heads": deployed.num_parameters(),
        "macs_per_second": macs / seconds,
        "conv_encoder_macs_per_second": conv_macs / seconds,
        "seconds_counted": seconds,
    }
    if is_baseline(name):
        row["params_with_heads"] = row["params_without_heads"]  # no distillation heads
        row["macs_per_second_with_heads"] = row["macs_per_second"]
    else:
        with_heads = build_model(name, heads=True, tiny=tiny)
        row["params_with_heads"] = with_heads.num_parameters()
        macs_heads, _ = count_forward_macs(with_heads, audio, output_hidden_states=True)
        row["macs_per_second_with_heads"] = macs_heads / seconds
    return row


def add_relative(rows: list[dict[str, Any]]) -> None:
    """Parameters (with heads, as the paper counts them) and MACs as a % of HuBERT Base."""
    reference = next((r for r in rows if r["model"] == REFERENCE), None)
    for row in rows:
        if reference is None:
            row["params_pct_of_hubert_base"] = row["macs_pct_of_hubert_base"] = None
            row["macs_with_heads_pct_of_hubert_base"] = None
            continue
        row["params_pct_of_hubert_base"] = 100 * row["params_with_heads"] / reference["params_with_heads"]
        row["macs_pct_of_hubert_base"] = 100 * row["macs_per_second"] / reference["macs_per_second"]
        row["macs_with_heads_pct_of_hubert_base"] = (100 * row["macs_per_second_with_heads"]
                                                     / reference["macs_per_second"])


def cpu_latency_pct(speed_json: Path | None) -> dict[str, float]:
    """model -> CPU latency at batch 1 as a % of HuBERT Base's, from inference_speed.py's JSON."""
    if speed_json is None or not speed_json.exists():
        return {}
    speed = json.loads(speed_json.read_text())
    rows = [r for r in speed.get("rows", []) if r.get("batch") == 1 and r.get("runtime") == "pytorch"]
    reference = next((r for r in rows if r["model"] == REFERENCE), None)
    if reference is None:
        return {}
    return {r["model"]: 100 * r["latency_ms"] / reference["latency_ms"] for r in rows}


def plot(rows: list[dict[str, Any]], latency_pct: dict[str, float], path: Path, title_note: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["model"] for r in rows]
    series = [("parameters (with heads)", [r["params_pct_of_hubert_base"] for r in rows], "#4c72b0"),
              ("MACs per second of audio", [r["macs_pct_of_hubert_base"] for r in rows], "#dd8452")]
    if latency_pct:
        series.append(("CPU fp32 latency, batch 1 x 10 s", [latency_pct.get(m) for m in models], "#55a868"))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(models)), 4.2), dpi=110)
    for i, (label, values, color) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(models))]
        heights = [v if v is not None else 0.0 for v in values]
        bars = ax.bar(xs, heights, width, label=label, color=color)
        for bar, value in zip(bars, values):
            if value is not None:
                ax.annotate(f"{value:.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.axhline(100, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel("% of HuBERT Base")
    ax.set_title("What each model costs, relative to HuBERT Base" + (f"\n{title_note}" if title_note else ""),
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(0, max(115, ax.get_ylim()[1]))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES,
                        help="Models to measure (default: every preset and every baseline: "
                             f"{', '.join(MODEL_NAMES)}).")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="Audio length of the counted forward pass; MACs are divided by it (default 10).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models of the same layout (tests, smoke runs).")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR, help="Where the JSON and PNG go.")
    parser.add_argument("--speed-json", type=Path, default=RESULTS_DIR / "inference_speed_cpu.json",
                        help="inference_speed.py's CPU JSON, for the latency bars of the plot (skipped if absent).")
    parser.add_argument("--no-plot", action="store_true", help="Do not write the PNG.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    rows = [measure(name, args.seconds, args.tiny) for name in args.models]
    add_relative(rows)
    result = {
        "benchmark": "size_compute",
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "seconds_of_audio": args.seconds,
        "mac_counting": "torch.utils.flop_counter.FlopCounterMode, MACs = FLOPs / 2, inference forward, batch 1",
        "rows": rows,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.output_dir / "size_compute.json", result)
    text = size_compute_table(rows)
    print(text)
    if not args.no_plot:
        latency = cpu_latency_pct(args.speed_json)
        png = plot(rows, latency, args.output_dir / "size_compute.png")
        result["plot"] = str(png)
        print(f"\nplot: {png}")
    return result


if __name__ == "__main__":
    main()
