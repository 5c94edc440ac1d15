"""The tables of measured numbers: one rendering per benchmark, and the docs' tables generated from the JSON.

Each benchmark script prints its rows with the rendering below, and writes the same rows to
benchmarks/results/*.json. The tables in README.md and docs/*.md are generated from that JSON,
so that a table never drifts from its measurement. A generated table sits between two marker
comments, which name it (see TABLES):

    <!-- table: inference_speed_cpu -->
    | model | batch | ... |
    <!-- /table -->

    python -m benchmarks.tables             # rewrite every generated table in place
    python -m benchmarks.tables --check     # change nothing; exit 1 naming each table that is out of date

Run it after a benchmark has rewritten its JSON. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from armhubert_training.superb_report import PUBLISHED, table as superb_table
from benchmarks.bench_utils import REPO, RESULTS_DIR, markdown_table

DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
MARKED_TABLE = re.compile(r"(?P<open><!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table -->)",
                          re.DOTALL)
HUBERT_BASE = "hubert-base"


def _percent(share: float | None) -> str | None:
    return None if share is None else f"{100 * share:.1f} %"


def _has(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return any(row.get(key) is not None for row in rows)


def _status_column(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """A status column only when a row failed (the failed run's error, cut short)."""
    return [("status", "status")] if any("error" in row for row in rows) else []


# ----------------------------------------------------------------------------------------------
# One rendering per benchmark: rows as the script measures them and writes them to its JSON
# ----------------------------------------------------------------------------------------------


def size_compute_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/size_compute.py: parameters and MACs per second of audio, absolute and as % of HuBERT Base."""
    shown = [{
        **row,
        "params_with_heads_m": row["params_with_heads"] / 1e6,
        "params_without_heads_m": row["params_without_heads"] / 1e6,
        "gmacs": row["macs_per_second"] / 1e9,
        "conv_gmacs": row["conv_encoder_macs_per_second"] / 1e9,
        "gmacs_heads": row["macs_per_second_with_heads"] / 1e9,
    } for row in rows]
    return markdown_table(shown, [
        ("model", "model"),
        ("params_with_heads_m", "params (M), with heads"),
        ("params_without_heads_m", "params (M), no heads"),
        ("params_pct_of_hubert_base", "params % of HuBERT Base"),
        ("gmacs", "GMACs / s of audio"),
        ("macs_pct_of_hubert_base", "MACs % of HuBERT Base"),
        ("conv_gmacs", "of which conv encoder"),
        ("gmacs_heads", "GMACs / s with heads"),
        ("macs_with_heads_pct_of_hubert_base", "with heads, % of HuBERT Base"),
    ])


def inference_speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/inference_speed.py: median latency, throughput and speed-up per model and batch
    (the size on disk when the rows have it: `--int8` runs)."""
    shown = [{**row, "shape": f"{row['batch']} × {row['seconds']:g} s"} for row in rows]
    size = [("size_mib", "size (MiB)")] if _has(rows, "size_mib") else []
    return markdown_table(shown, [
        ("name", "model"), ("shape", "batch"), ("latency_ms", "latency (ms)"),
        ("throughput_audio_s_per_s", "audio s / s"), ("speedup_vs_hubert_base", "× faster than HuBERT Base"),
        *size,
    ])


def distill_throughput_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/distill_throughput.py: one distillation step per variant."""
    shown = [{**row, "status": row.get("error", "ok")[:60],
              "share": "on" if row["share_features"] else "off",
              "fused": "on" if row["fused_attention"] else "off"} for row in rows]
    memory = [("peak_memory_gib", "peak memory (GiB)")] if _has(rows, "peak_memory_gib") else []
    return markdown_table(shown, [
        ("variant", "variant"), ("share", "shared teacher features"), ("fused", "fused attention"),
        ("compile", "torch.compile"), ("audio_s_per_s", "audio s / s"), ("step_ms", "step (ms)"),
        *memory, ("achieved_tflop_s", "TFLOP/s"), *_status_column(rows),
    ])


def distill_end_to_end_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/distill_end_to_end.py: run_distill.py's training loop per variant."""
    shown = [{**row, "status": row.get("error", "ok")[:60], "data_wait": _percent(row.get("data_wait_share")),
              "padding": _percent(row.get("padding_share")),
              "options": f"`{row['arguments']}`" if row["arguments"].startswith("--") else row["arguments"]}
             for row in rows]
    memory = [("peak_memory_gib", "peak memory (GiB)")] if _has(rows, "peak_memory_gib") else []
    return markdown_table(shown, [
        ("variant", "variant"), ("options", "options"), ("audio_s_per_s", "audio s / s"), ("step_ms", "step (ms)"),
        ("data_wait", "data wait"), ("padding", "padding"),
        ("mask_ms_per_step", "mask in the training process (ms / step)"), *memory, *_status_column(rows),
    ])


def int8_layers_shown(deepest: int) -> list[int]:
    """Layers 1-4, then the middle, three quarters and the last of the deepest model (1, 2, 3, 4, 6, 9, 12)."""
    return sorted({*range(1, min(4, deepest) + 1), deepest // 2, 3 * deepest // 4, deepest} - {0})


def int8_accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/int8_accuracy.py: relative error of chosen layers' outputs against fp32, and the lowest cosine."""
    layers = int8_layers_shown(max(len(row["layers"]) for row in rows))
    shown = [{**row, **{f"layer_{i}": f"{row['layers'][i - 1]['relative_error']:.4f}"
                        for i in layers if i <= len(row["layers"])},
              "min_cosine": f"{row['min_cosine']:.6f}"} for row in rows]
    return markdown_table(shown, [("model", "model"), ("runtime", "runtime"),
                                  *[(f"layer_{i}", f"layer {i}") for i in layers], ("min_cosine", "lowest cosine")])


def front_end_share_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/front_end_share.py: the conv encoder's time and share of one forward, per model, runtime and threads."""
    shown = [{**row, "what": f"{row['model']} ({row['runtime']} {row['precision']})",
              "share": f"{100 * row['front_end_share']:.0f} %"} for row in rows]
    return markdown_table(shown, [("what", "model"), ("threads", "threads"), ("front_end_ms", "conv encoder (ms)"),
                                  ("total_ms", "whole model (ms)"), ("share", "conv encoder share")])


def front_end_layouts_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/front_end_layouts.py: each layout of a conv encoder, its time and its agreement with fp32."""
    shown = [{**row, "speedup": f"{row['speedup']:.2f}×", "output_error": f"{row['output_error']:.1e}",
              "gradient_error": None if row["gradient_error"] is None else f"{row['gradient_error']:.1e}"}
             for row in rows]
    return markdown_table(shown, [("model", "conv encoder of"), ("mode", "mode"), ("label", "layout"),
                                  ("ms", "ms per call"), ("speedup", "× the first layout"),
                                  ("output_error", "output vs fp32"), ("gradient_error", "gradients vs fp32")])


def padding_waste_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/padding_waste.py: padding and batch sizes of each batching strategy over one epoch."""
    return markdown_table(rows, [
        ("strategy", "strategy"), ("padding", "padding"), ("utts_per_batch", "utterances / batch"),
        ("batches", "batches"), ("mean_padded_s", "mean padded audio per batch (s)"),
        ("max_padded_s", "largest batch (padded s)"),
    ])


def qbe_dtw_table(rows: Sequence[dict[str, Any]]) -> str:
    """benchmarks/qbe_dtw.py: query-by-example pairs per second, s3prl's way (scipy + dtw-python, one
    process) and batched torch, and the projected English dev sweep."""
    shown = [{**row, "what": {"dtw": "DTW only", "pair": "distances + DTW"}[row["what"]],
              "device": row["device"] + (f", {row['threads']} thread" if row.get("threads") else ""),
              "reference": f"{row['reference_pairs_per_s']:,.0f}", "fast": f"{row['fast_pairs_per_s']:,.0f}",
              "speedup": f"{row['speedup']:.0f}×", "reference_h": f"{row['sweep_reference_hours_per_core']:.1f}",
              "fast_h": f"{row['sweep_fast_hours']:.2f}"} for row in rows]
    return markdown_table(shown, [
        ("what", "per pair"), ("device", "torch path on"), ("reference", "s3prl's way, pairs / s (1 core)"),
        ("fast", "batched torch, pairs / s"), ("speedup", "speed-up"),
        ("reference_h", "dev sweep, s3prl's way (core-hours)"), ("fast_h", "dev sweep, batched (hours)"),
    ])


# ----------------------------------------------------------------------------------------------
# The docs' tables
# ----------------------------------------------------------------------------------------------


def load_rows(name: str) -> list[dict[str, Any]]:
    """The rows of benchmarks/results/<name>.json."""
    return json.loads((RESULTS_DIR / f"{name}.json").read_text())["rows"]


def _speedup(rows: list[dict[str, Any]], model: str, batch: int) -> float | None:
    return next((row["speedup_vs_hubert_base"] for row in rows
                 if row["name"] == model and row["batch"] == batch and row["runtime"] == "pytorch"), None)


def headline_table() -> str:
    """The front page's summary: size and compute (size_compute.json) with the speed-ups of the CPU
    fp32 and GPU bf16 runs (inference_speed_cpu.json, inference_speed_cuda.json), next to HuBERT Base."""
    size = {row["model"]: row for row in load_rows("size_compute")}
    cpu, gpu = load_rows("inference_speed_cpu"), load_rows("inference_speed_cuda")
    # armwavlm-s is armhubert-s's network: one row for both.
    shown = []
    for model, label in [("armhubert", "armhubert"), ("armhubert-s", "armhubert-s, armwavlm-s"),
                         ("maskhubert", "maskhubert"), (HUBERT_BASE, "HuBERT Base")]:
        row = size[model]
        shown.append({
            "model": label,
            "params": f"{row['params_with_heads']:,}",
            "params_deployed": f"{row['params_without_heads']:,}",
            "params_pct": row["params_pct_of_hubert_base"],
            "gmacs": row["macs_per_second"] / 1e9,
            "macs_pct": row["macs_pct_of_hubert_base"],
            "cpu": _speedup(cpu, model, 1),
            "gpu": _speedup(gpu, model, 32),
        })
    return markdown_table(shown, [
        ("model", "model"), ("params", "parameters, with distillation heads"),
        ("params_deployed", "without heads (deployed)"), ("params_pct", "params with heads, % of HuBERT Base"),
        ("gmacs", "GMACs / s of audio, deployed"), ("macs_pct", "MACs % of HuBERT Base"),
        ("cpu", "× faster, CPU fp32, 1 × 10 s"), ("gpu", "× faster, GPU bf16, 32 × 10 s"),
    ])


def superb_published_table() -> str:
    """The published SUPERB results (armhubert_training/superb_report.py), as superb_report prints them."""
    return superb_table(PUBLISHED)


TABLES: dict[str, Callable[[], str]] = {
    "headline": headline_table,
    "superb_published": superb_published_table,
    "size_compute": lambda: size_compute_table(load_rows("size_compute")),
    "inference_speed_cpu": lambda: inference_speed_table(load_rows("inference_speed_cpu")),
    "inference_speed_cuda": lambda: inference_speed_table(load_rows("inference_speed_cuda")),
    "inference_speed_cpu_int8": lambda: inference_speed_table(load_rows("inference_speed_cpu_int8")),
    "inference_speed_cpu_int8_1thread": lambda: inference_speed_table(load_rows("inference_speed_cpu_int8_1thread")),
    "front_end_share_cpu": lambda: front_end_share_table(load_rows("front_end_share_cpu")),
    "front_end_share_cpu_avx512": lambda: front_end_share_table(load_rows("front_end_share_cpu_avx512")),
    "front_end_layouts_cpu": lambda: front_end_layouts_table(load_rows("front_end_layouts_cpu")),
    "int8_accuracy": lambda: int8_accuracy_table(load_rows("int8_accuracy")),
    "distill_throughput_cuda": lambda: distill_throughput_table(load_rows("distill_throughput_cuda")),
    "distill_throughput_cpu": lambda: distill_throughput_table(load_rows("distill_throughput_cpu")),
    "distill_end_to_end_cuda": lambda: distill_end_to_end_table(load_rows("distill_end_to_end_cuda")),
    "distill_end_to_end_cpu_tiny": lambda: distill_end_to_end_table(load_rows("distill_end_to_end_cpu_tiny")),
    "distill_end_to_end_cpu": lambda: distill_end_to_end_table(load_rows("distill_end_to_end_cpu")),
    "padding_waste": lambda: padding_waste_table(load_rows("padding_waste")),
    "qbe_dtw_cpu": lambda: qbe_dtw_table(load_rows("qbe_dtw_cpu")),
}


def regenerate(text: str, source: str = "the text") -> tuple[str, list[str]]:
    """`text` with every marked table rendered anew, and the names of those that changed."""
    changed: list[str] = []

    def render(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"{source} marks a table {name!r} that benchmarks/tables.py does not know; "
                           f"known: {', '.join(TABLES)}.")
        body = TABLES[name]() + "\n"
        if body != match["body"]:
            changed.append(name)
        return match["open"] + body + match["close"]

    return MARKED_TABLE.sub(render, text), changed


def marked_tables(docs: Sequence[Path] = DOCS) -> dict[str, list[Path]]:
    """Each marked table's name -> the docs it appears in."""
    found: dict[str, list[Path]] = {}
    for doc in docs:
        for match in MARKED_TABLE.finditer(doc.read_text()):
            found.setdefault(match["name"], []).append(doc)
    return found


def _label(doc: Path) -> str:
    return str(doc.relative_to(REPO)) if doc.is_relative_to(REPO) else str(doc)


def stale_tables(docs: Sequence[Path] = DOCS) -> list[str]:
    """'doc: table' for every generated table that differs from what its JSON gives now."""
    stale = []
    for doc in docs:
        _, changed = regenerate(doc.read_text(), _label(doc))
        stale += [f"{_label(doc)}: {name}" for name in changed]
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="Change nothing; exit 1 naming every table that is out of date with its JSON.")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_tables()
        for entry in stale:
            print(f"out of date: {entry} (run python -m benchmarks.tables)")
        return 1 if stale else 0
    for doc in DOCS:
        text, changed = regenerate(doc.read_text(), _label(doc))
        if changed:
            doc.write_text(text)
            print(f"{_label(doc)}: rewrote {', '.join(changed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
