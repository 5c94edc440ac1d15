"""Export an ArmHubert student to ONNX, for ONNX Runtime and other deployment runtimes.

The ONNX model takes `input_values` (batch, samples) float32 waveforms at 16 kHz and
`attention_mask` (batch, samples) int64, 1 = real sample, 0 = padding (pass all ones for an
unpadded batch), both with dynamic batch and length. It returns `last_hidden_state`
(batch, frames, hidden) (`logits` (batch, frames, vocab) for an `ArmHubertForCTC`), and with
`--hidden-states` also `hidden_states` (layers + 1, batch, frames, hidden), the encoder input and
every layer's output. Frame b, t is real when t < the conv output length of item b's real samples
(`model._get_feat_extract_output_lengths`); outputs on padded frames are to be ignored.

    python -m armhubert_training.export_onnx armhubert.onnx --model path/to/student    # a saved student
    python -m armhubert_training.export_onnx armhubert.onnx --preset armhubert         # random weights
    python -m armhubert_training.export_onnx asr.onnx --model path/to/ctc-model --hidden-states

After writing, the export is checked: ONNX Runtime and PyTorch run the same padded batch and the
largest difference on real frames must stay under `--atol` (1e-4).

Uses `torch.onnx.export(..., dynamo=True)` (needs `onnx` and `onnxscript`; the check needs
`onnxruntime`: `pip install -e ".[onnx]"`).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from configuration_armhubert import PRESETS, ArmHubertConfig
from modeling_armhubert import ArmHubertForCTC, ArmHubertModel

INPUT_NAMES = ["input_values", "attention_mask"]


class OnnxStudent(nn.Module):
    """The traced function: (input_values, attention_mask) -> main output [, stacked hidden states]."""

    def __init__(self, model: ArmHubertModel | ArmHubertForCTC, hidden_states: bool = False):
        super().__init__()
        self.model = model
        self.hidden_states = hidden_states
        self.is_ctc = isinstance(model, ArmHubertForCTC)

    @property
    def output_names(self) -> list[str]:
        return ["logits" if self.is_ctc else "last_hidden_state"] + (["hidden_states"] if self.hidden_states else [])

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_values, attention_mask=attention_mask, output_hidden_states=self.hidden_states,
                         return_dict=True)
        main = out.logits if self.is_ctc else out.last_hidden_state
        if self.hidden_states:
            return main, torch.stack(out.hidden_states)
        return main


def load_student(model_dir: str) -> ArmHubertModel | ArmHubertForCTC:
    """A saved ArmHubertForCTC as itself, any other saved student as its ArmHubertModel, in eval mode."""
    config = ArmHubertConfig.from_pretrained(model_dir)
    architectures = config.architectures or []
    if "ArmHubertForCTC" in architectures:
        return ArmHubertForCTC.from_pretrained(model_dir).eval()
    others = [name for name in architectures if name != "ArmHubertModel"]
    if others:
        print(f"{model_dir} holds a {others[0]}: exporting its student encoder (ArmHubertModel) only.")
    return ArmHubertModel.from_pretrained(model_dir).eval()


def example_inputs(config: ArmHubertConfig, batch: int = 2, samples: int = 16000,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch: random audio, the last item shorter by a quarter (never below the receptive field)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, samples, generator=generator)
    mask = torch.ones(batch, samples, dtype=torch.long)
    if batch > 1:
        real = max(config.receptive_field, samples - samples // 4)
        mask[-1, real:] = 0
        values[-1, real:] = 0.0
    return values, mask


def export_student(model: ArmHubertModel | ArmHubertForCTC, path: str | Path, hidden_states: bool = False,
                   opset: int | None = None) -> Path:
    """Write `model` as an ONNX file with dynamic batch and length; returns the path.

    The weights go inside the .onnx file (the students are far below ONNX's 2 GB limit).
    """
    wrapper = OnnxStudent(model.eval(), hidden_states=hidden_states).eval()
    # Batch 2 with padding, so that nothing is specialised to one batch size or to an unpadded batch.
    args = example_inputs(model.config)
    batch = torch.export.Dim("batch", min=1)
    samples = torch.export.Dim("samples", min=model.config.receptive_field)
    dynamic = {"input_values": {0: batch, 1: samples}, "attention_mask": {0: batch, 1: samples}}
    # The exporter warns about torchvision ops it cannot register and about the two inputs sharing
    # their axis names (which is the point); neither concerns this model.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.onnx.export(wrapper, args, dynamo=True, input_names=INPUT_NAMES,
                                    output_names=wrapper.output_names, dynamic_shapes=dynamic,
                                    opset_version=opset, verbose=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session (`threads` intra-op threads; None = ONNX Runtime's default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_difference(model: ArmHubertModel | ArmHubertForCTC, session, values: torch.Tensor, mask: torch.Tensor,
                   hidden_states: bool = False) -> float:
    """Largest |ONNX Runtime - PyTorch| over the real frames of every output."""
    wrapper = OnnxStudent(model.eval(), hidden_states=hidden_states)
    with torch.no_grad():
        expected = wrapper(values, mask)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    got = session.run(None, {"input_values": values.numpy(), "attention_mask": mask.numpy()})
    base = model.armhubert if isinstance(model, ArmHubertForCTC) else model
    real = base._get_feature_vector_attention_mask(expected[0].shape[1], mask)  # (B, T)
    worst = 0.0
    for want, have in zip(expected, got):
        have = torch.from_numpy(have)
        if have.shape != want.shape:
            raise AssertionError(f"ONNX output shape {tuple(have.shape)} != PyTorch {tuple(want.shape)}")
        frame_mask = real if want.dim() == 3 else real[None].expand(want.shape[0], -1, -1)
        worst = max(worst, (have - want).abs()[frame_mask].max().item())
    return worst


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="The .onnx file to write.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Folder of a saved ArmHubertModel or ArmHubertForCTC.")
    source.add_argument("--preset", choices=sorted(PRESETS), help="A preset with random weights (no heads).")
    parser.add_argument("--hidden-states", action="store_true",
                        help="Also output every layer's hidden states, stacked: (layers + 1, batch, frames, hidden).")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
    parser.add_argument("--atol", type=float, default=1e-4, help="Largest difference the check accepts.")
    parser.add_argument("--no-check", action="store_true", help="Skip the ONNX Runtime check.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> float | None:
    args = parse_args(argv)
    if args.model:
        model = load_student(args.model)
    else:
        torch.manual_seed(0)
        model = ArmHubertModel(ArmHubertConfig.from_preset(args.preset, projection_dim=0)).eval()
    path = export_student(model, args.output, hidden_states=args.hidden_states, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    if args.no_check:
        return None
    session = onnx_session(path)
    worst = 0.0
    for batch, samples in ((2, 24000), (3, 16123)):  # two shapes: dynamic batch and length
        values, mask = example_inputs(model.config, batch, samples, seed=batch)
        worst = max(worst, max_difference(model, session, values, mask, args.hidden_states))
    print(f"ONNX Runtime vs PyTorch on padded batches: max |difference| on real frames = {worst:.2e}")
    if worst > args.atol:
        raise SystemExit(f"The ONNX model differs from PyTorch by {worst:.2e} > {args.atol:.0e}.")
    return worst


if __name__ == "__main__":
    main()
