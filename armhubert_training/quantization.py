"""Int8 students for CPU deployment, and how far their outputs move from fp32.

- ONNX: `quantize_onnx_int8` applies ONNX Runtime's dynamic quantisation to an exported student
  (export_onnx.py): the weights of every matrix product with a constant weight (the Linear layers,
  MatMul / Gemm nodes) are stored as int8 and their inputs are quantised on the fly, per call and
  per tensor. Everything else stays fp32: the conv feature encoder when exported as Conv nodes (the
  default), the positional conv, the group and layer norms, softmax, and the attention products of
  two activations. A student exported with its convs as matrix products (`convs_as_matmul`) gets
  its conv layers quantised as well, all but the first, which reads the waveform and stays a Conv
  node: 8 bits per tensor would flatten the audio. Their weights are unsigned int8 (the Linear layers'
  are signed): see `quantize_onnx_int8`. Layers can also be kept fp32 by module name (`keep_fp32`).
- PyTorch: `quantize_linear_layers` swaps every `nn.Linear` for PyTorch's dynamically quantised int8
  Linear (`torch.ao.quantization.quantize_dynamic`; deprecated in favour of the separate torchao
  package, still present in torch 2.13).

`output_errors` measures the error: per output (and per layer for stacked hidden states), the mean
cosine similarity of real frames and the relative error ||int8 - fp32|| / ||fp32|| over real frames.
"""

from __future__ import annotations

import ast
import copy
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

# Largest relative error of any output (any layer, when the hidden states are exported) that the
# int8 export accepts. The students measured in docs/deployment.md stay near 0.01 on speech; 0.05 means
# that a twentieth of the output's norm is quantisation noise.
DEFAULT_MAX_RELATIVE_ERROR = 0.05

QUANTIZED_OP_TYPES = ("MatMul", "Gemm")

# The module path of the conv encoder's layers (`feature_extractor.conv_layers.3`).
CONV_ENCODER_MODULE = re.compile(r"(^|\.)feature_extractor\.conv_layers\.")


def linear_layer_nodes(model) -> dict[str, str]:
    """The MatMul / Gemm nodes of an exported model that multiply by a constant weight: node name -> module.

    The module is the dotted path of the PyTorch module the node came from (e.g.
    `encoder.layers.3.feed_forward.output_dense`), read from the exporter's `name_scopes` metadata,
    without the export wrapper's prefix; "" when the metadata is missing.
    """
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    nodes = {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES or len(node.input) < 2 or node.input[1] not in constants:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "[]")
        modules = [s for s in ast.literal_eval(scopes) if s]
        # The last scope is the traced op (`linear_3`), the one before it the module that ran it.
        module = modules[-2] if len(modules) >= 2 else ""
        nodes[node.name] = re.sub(r"^model\.", "", module)
    return nodes


def quantize_onnx_int8(fp32_path: str | Path, int8_path: str | Path, keep_fp32: Sequence[str] = ()) -> Path:
    """Write the int8 (dynamic quantisation) version of the ONNX model at `fp32_path` to `int8_path`.

    Args:
        keep_fp32: regular expressions; layers whose module name matches one (`re.search`) stay fp32,
            e.g. `"encoder.layers.11"`, `"feed_forward.output_dense"` or `"conv_layers.[1-3]$"`.

    Inputs, outputs and their dynamic axes are those of the fp32 model.

    Weights are signed int8, the fast kernels' form, except those of conv layers written as products:
    their inputs are scaled block by block to the full range (`conv_as_matmul`), and on CPUs without
    VNNI, ONNX Runtime's unsigned-by-signed kernels add products in pairs into 16 bits, which such
    inputs overflow (relative error 0.18 instead of 0.04 on a tiny student). Unsigned weights take
    kernels that do not, so the file is as accurate on every CPU as on the one that checked it.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    linear = linear_layer_nodes(model)
    patterns = [re.compile(p) for p in keep_fp32]
    excluded = [node for node, module in linear.items() if any(p.search(module) for p in patterns)]
    if patterns and not excluded:
        raise ValueError(f"No layer matches --int8-keep-fp32 {list(keep_fp32)}; module names look like "
                         f"{sorted(set(linear.values()))[:3]}.")
    quantized = [node for node in linear if node not in excluded]
    convs = [node for node in quantized if CONV_ENCODER_MODULE.search(linear[node])]
    passes = [(QuantType.QInt8, [node for node in quantized if node not in convs])]
    if convs:  # a second pass over the first one's file, whose quantised nodes are no longer MatMul
        passes.append((QuantType.QUInt8, convs))
    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    # The quantiser advises a shape-inference pre-pass on the root logger; the exporter's graph already
    # carries its shapes, and the error check measures the result.
    root = logging.getLogger()
    advice = _DropMessage("pre-processing before quantization")
    root.addFilter(advice)
    try:
        source = model
        for weight_type, nodes in passes:
            quantize_dynamic(source, int8_path, op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                             nodes_to_quantize=nodes, weight_type=weight_type,
                             # Only products with a constant weight: attention's QK^T and PV stay fp32.
                             extra_options={"MatMulConstBOnly": True})
            source = int8_path
    finally:
        root.removeFilter(advice)
    return int8_path


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quantize_linear_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers run as PyTorch's dynamic int8 Linear (CPU only)."""
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


@dataclass
class OutputError:
    """How far one output (or one layer of the stacked hidden states) moved, over real frames."""

    name: str
    cosine: float  # mean over real frames of the cosine similarity of the two frame vectors
    relative_error: float  # ||output - reference|| / ||reference|| over all real frames

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def output_errors(names: Sequence[str], references: Sequence[torch.Tensor], outputs: Sequence[torch.Tensor],
                  frame_mask: torch.Tensor) -> list[OutputError]:
    """Errors of `outputs` against `references` on the real frames.

    Args:
        names: one per output; a stacked `hidden_states` output (layers + 1, B, T, H) is split into
            `hidden_states[0]` (the encoder input) ... `hidden_states[L]` (the last layer).
        references, outputs: (B, T, H) tensors, or (N, B, T, H) for stacked hidden states.
        frame_mask: (B, T) bool, True on real frames.
    """
    errors = []
    for name, reference, output in zip(names, references, outputs):
        if reference.shape != output.shape:
            raise ValueError(f"{name}: output shape {tuple(output.shape)} != reference {tuple(reference.shape)}")
        if reference.dim() == 3:
            pairs = [(name, reference, output)]
        else:
            pairs = [(f"{name}[{i}]", r, o) for i, (r, o) in enumerate(zip(reference, output))]
        for label, r, o in pairs:
            r, o = r[frame_mask].double(), o[frame_mask].double()  # (real frames, H)
            cosine = nn.functional.cosine_similarity(o, r, dim=-1, eps=1e-12).mean().item()
            relative = ((o - r).norm() / r.norm().clamp_min(1e-12)).item()
            errors.append(OutputError(label, cosine, relative))
    return errors


def error_table(errors: Sequence[OutputError]) -> str:
    lines = [f"{'output':<20} {'cosine':>10} {'rel. error':>11}"]
    lines += [f"{e.name:<20} {e.cosine:>10.6f} {e.relative_error:>11.4f}" for e in errors]
    return "\n".join(lines)
