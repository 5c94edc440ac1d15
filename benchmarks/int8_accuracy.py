"""How far the int8 students' hidden states move from fp32, layer by layer, on speech.

For each model: the fp32 ONNX export with every layer's hidden states (export_onnx.py), its int8
version (ONNX Runtime dynamic quantisation, armhubert_training/quantization.py), the int8 version
that quantises the conv encoder too (`--int8-conv-encoder`), and PyTorch's dynamic int8 Linear layers, all run on one padded batch of the bundled LibriSpeech utterances.
Against the fp32 PyTorch model, per layer: the mean cosine similarity of the real frames and the
relative error ||int8 - fp32|| / ||fp32|| over them.

    python -m benchmarks.int8_accuracy --models armhubert path/to/converted-student

A model is a preset (random weights) or the folder of a saved student, e.g. one converted from the
authors' checkpoint by armhubert_training.convert_original_checkpoint. JSON goes to
benchmarks/results/int8_accuracy.json unless `--output` says otherwise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from armhubert_training.export_onnx import (
    bundled_speech, export_int8_conv_encoder, export_student, int8_errors, load_student, onnx_session, speech_batch,
)
from armhubert_training.quantization import (
    DEFAULT_MAX_RELATIVE_ERROR, OutputError, output_errors, quantize_linear_layers, quantize_onnx_int8,
)
from benchmarks.bench_utils import RESULTS_DIR, build_model, command_line, machine_info, write_json
from benchmarks.tables import int8_accuracy_table
from configuration_armhubert import PRESETS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["armhubert"],
                        help="Presets (random weights) or folders of saved students (default armhubert).")
    parser.add_argument("--audio", nargs="+", type=Path, default=None,
                        help="Speech files, run as one padded batch (default: the first 4 bundled utterances).")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "int8_accuracy.json", help="JSON file.")
    return parser.parse_args(argv)


def pytorch_int8_errors(model, values: torch.Tensor, mask: torch.Tensor) -> list[OutputError]:
    """Hidden states of PyTorch's dynamic int8 Linear layers against the fp32 model's."""
    quantized = quantize_linear_layers(model)
    with torch.no_grad():
        reference = model(values, attention_mask=mask, output_hidden_states=True).hidden_states
        output = quantized(values, attention_mask=mask, output_hidden_states=True).hidden_states
    real = model._get_feature_vector_attention_mask(reference[0].shape[1], mask)
    return output_errors(["hidden_states"], [torch.stack(reference)], [torch.stack(output)], real)


def measure(name: str, values: torch.Tensor, mask: torch.Tensor, workdir: Path) -> list[dict[str, Any]]:
    model = build_model(name) if name in PRESETS else load_student(name)
    fp32_path = export_student(model, workdir / "model.onnx", hidden_states=True)
    int8_path = quantize_onnx_int8(fp32_path, workdir / "model.int8.onnx")
    conv_int8_path = export_int8_conv_encoder(model, workdir / "convs_as_matmul.int8.onnx", hidden_states=True)
    rows = []
    for runtime, errors in (
        ("onnxruntime int8", int8_errors(model, onnx_session(int8_path), values, mask, hidden_states=True)),
        ("onnxruntime int8 + conv encoder",
         int8_errors(model, onnx_session(conv_int8_path), values, mask, hidden_states=True)),
        ("pytorch int8", pytorch_int8_errors(model, values, mask)),
    ):
        layers = [e for e in errors if e.name.startswith("hidden_states[")][1:]  # the layers' outputs
        rows.append({
            "model": Path(name).name, "runtime": runtime,
            "layers": [e.as_dict() for e in layers],
            "first_layer_relative_error": layers[0].relative_error,
            "middle_layer_relative_error": layers[len(layers) // 2 - 1].relative_error,
            "last_layer_relative_error": layers[-1].relative_error,
            "max_relative_error": max(e.relative_error for e in layers),
            "min_cosine": min(e.cosine for e in layers),
        })
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    files = args.audio or bundled_speech()
    if not files:
        raise SystemExit("No speech to measure on: pass --audio FILE ... (the bundled data/tiny-librispeech is absent).")
    values, mask = speech_batch(files)
    rows = []
    for name in args.models:
        with tempfile.TemporaryDirectory() as workdir:
            rows += measure(name, values, mask, Path(workdir))
    result = {
        "benchmark": "int8_accuracy",
        "command": command_line(__file__, argv),
        "machine": machine_info(),
        "audio": [Path(f).name for f in files],
        "audio_seconds": [round(int(m.sum()) / 16000, 2) for m in mask],
        "max_relative_error_bound": DEFAULT_MAX_RELATIVE_ERROR,
        "rows": rows,
    }
    write_json(args.output, result)
    print(int8_accuracy_table(rows))
    return result


if __name__ == "__main__":
    main()
