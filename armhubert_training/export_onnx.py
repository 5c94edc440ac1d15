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

A model with a NaN or infinite weight is refused before anything is written. After writing, the
export is checked: ONNX Runtime and PyTorch run the same padded batch and the largest difference on
real frames must stay under `--atol` (1e-4); a NaN or infinite output on a real frame (of either)
fails the check and removes the file.

With `--quantize int8` the script also writes an int8 model beside it (`armhubert.int8.onnx`):
ONNX Runtime's dynamic quantisation of the Linear layers (armhubert_training/quantization.py), same
inputs, outputs and dynamic axes. It is checked on speech (a padded batch of the bundled utterances,
or `--int8-check-audio`, read before anything is exported) against fp32 PyTorch: per output, and per
layer with `--hidden-states`, the cosine similarity and relative error of the real frames are printed,
and a relative error above `--int8-max-error` removes the int8 file and exits non-zero
(`--accept-int8-error` keeps it). An int8 file whose check did not pass is never left behind.

    python -m armhubert_training.export_onnx armhubert.onnx --model path/to/student --quantize int8

Uses `torch.onnx.export(..., dynamo=True)` (needs `onnx` and `onnxscript`; the check needs
`onnxruntime`: `pip install -e ".[onnx]"`).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from armhubert_training.quantization import (
    DEFAULT_MAX_RELATIVE_ERROR, OutputError, error_table, output_errors, quantize_onnx_int8,
)
from configuration_armhubert import PRESETS, ArmHubertConfig, conv_receptive_field
from modeling_armhubert import ArmHubertForCTC, ArmHubertModel

INPUT_NAMES = ["input_values", "attention_mask"]
BUNDLED_AUDIO = Path(__file__).resolve().parents[1] / "data" / "tiny-librispeech"


class NonFiniteOutputError(ValueError):
    """PyTorch or ONNX Runtime gave NaN or infinite values on real frames: no difference can be measured."""


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


def non_finite_weights(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers holding a NaN or an infinite value."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [name for name, tensor in tensors if tensor.is_floating_point() and not tensor.isfinite().all()]


def receptive_field(config) -> int:
    """Samples seen by one frame of the conv feature encoder of any config with conv_kernel/conv_stride
    (Transformers' HuBERT too: the benchmarks export it for comparison)."""
    return conv_receptive_field(config.conv_kernel, config.conv_stride)


def example_inputs(config: ArmHubertConfig, batch: int = 2, samples: int = 16000,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch: random audio, the last item shorter by a quarter (never below the receptive field)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, samples, generator=generator)
    mask = torch.ones(batch, samples, dtype=torch.long)
    if batch > 1:
        real = max(receptive_field(config), samples - samples // 4)
        mask[-1, real:] = 0
        values[-1, real:] = 0.0
    return values, mask


def export_student(model: ArmHubertModel | ArmHubertForCTC, path: str | Path, hidden_states: bool = False,
                   opset: int | None = None, convs_as_matmul: bool = False) -> Path:
    """Write `model` as an ONNX file with dynamic batch and length; returns the path.

    The weights go inside the .onnx file (the students are far below ONNX's 2 GB limit). With
    `convs_as_matmul` the conv encoder is written as matrix products (`conv_as_matmul`, same outputs),
    the form in which int8 quantisation covers it too; the default Conv nodes are faster in fp32.
    """
    encoder = (model.armhubert if isinstance(model, ArmHubertForCTC) else model).feature_extractor
    encoder.convs_as_matmul = convs_as_matmul
    try:
        return _export(model, Path(path), hidden_states, opset)
    finally:
        encoder.convs_as_matmul = False


def _export(model: ArmHubertModel | ArmHubertForCTC, path: Path, hidden_states: bool, opset: int | None) -> Path:
    wrapper = OnnxStudent(model.eval(), hidden_states=hidden_states).eval()
    # Batch 2 with padding, so that nothing is specialised to one batch size or to an unpadded batch.
    args = example_inputs(model.config)
    batch = torch.export.Dim("batch", min=1)
    # At least two frames: one frame is a special case to the tracer (the positional conv's and
    # attention's shape checks), and a range that includes it costs a second trace with the range the
    # exporter then suggests. One-frame inputs still run: no node depends on that check.
    samples = torch.export.Dim("samples", min=receptive_field(model.config) + math.prod(model.config.conv_stride))
    dynamic = {"input_values": {0: batch, 1: samples}, "attention_mask": {0: batch, 1: samples}}
    # The exporter warns about torchvision ops it cannot register and about the two inputs sharing
    # their axis names (which is the point); neither concerns this model.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        # optimize=False: fold_weight_preparation runs the same optimizer with wider limits, and the
        # exporter's own pass before it changes nothing that one leaves (same graph, 1-2 s less per export).
        program = torch.onnx.export(wrapper, args, dynamo=True, input_names=INPUT_NAMES,
                                    output_names=wrapper.output_names, dynamic_shapes=dynamic,
                                    opset_version=opset, optimize=False, verbose=False)
    fold_weight_preparation(program.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    return path


def export_int8_conv_encoder(model: ArmHubertModel | ArmHubertForCTC, int8_path: str | Path,
                             hidden_states: bool = False, opset: int | None = None,
                             keep_fp32: Sequence[str] = ()) -> Path:
    """Write the int8 model whose conv encoder is quantised too (`--int8-conv-encoder`): quantisation of
    a second export with `convs_as_matmul`, kept only until the int8 file is written."""
    with tempfile.TemporaryDirectory() as workdir:
        matmul_path = export_student(model, Path(workdir) / "convs_as_matmul.onnx", hidden_states=hidden_states,
                                     opset=opset, convs_as_matmul=True)
        return quantize_onnx_int8(matmul_path, int8_path, keep_fp32=keep_fp32)


def fold_weight_preparation(model) -> None:
    """Replace, in place, every computation on weights alone by its result, so that no call redoes it:
    the positional conv's weight norm in every export, and with `convs_as_matmul` the conv encoder's
    weights permuted and reshaped into matrices, whose products must multiply by constants for int8
    dynamic quantisation to take them. This is the exporter's optimizer (its own run is turned off in
    `_export`) with wider limits: by default it leaves inputs above 8,192 values alone; these reach 480 x 960."""
    import onnxscript

    onnxscript.optimizer.optimize(model, input_size_limit=1 << 30, output_size_limit=1 << 30)


# ONNX Runtime's graph rewrites that make a model slower on CPUs. SkipLayerNormFusion merges each
# residual Add with the LayerNorm after it; its CPU kernel took 1.5 ms per call on (500, 480) where the
# LayerNorm and the Add it replaces take about 0.3 (armhubert at 1 x 10 s: 38 against 7 ms in all; the
# whole model 4-8 % faster, docs/deployment.md). An optimizer name that a version of ONNX Runtime does
# not know is ignored.
SLOW_CPU_REWRITES = ["SkipLayerNormFusion"]


def onnx_session(path: str | Path, threads: int | None = None, **session_options: Any):
    """An ONNX Runtime CPU session (`threads` intra-op threads; None = ONNX Runtime's default), without
    the `SLOW_CPU_REWRITES`. `session_options` set fields of its SessionOptions, e.g. `enable_profiling`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    for name, value in session_options.items():
        setattr(options, name, value)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=SLOW_CPU_REWRITES)


def run_both(model: ArmHubertModel | ArmHubertForCTC, session, values: torch.Tensor, mask: torch.Tensor,
             hidden_states: bool = False) -> tuple[list[str], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """PyTorch and ONNX Runtime on the same batch: (output names, PyTorch outputs, ONNX Runtime outputs,
    (B, T) bool mask of the real frames)."""
    wrapper = OnnxStudent(model.eval(), hidden_states=hidden_states)
    with torch.no_grad():
        expected = wrapper(values, mask)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    got = [torch.from_numpy(out) for out in
           session.run(None, {"input_values": values.numpy(), "attention_mask": mask.numpy()})]
    for want, have in zip(expected, got):
        if have.shape != want.shape:
            raise AssertionError(f"ONNX output shape {tuple(have.shape)} != PyTorch {tuple(want.shape)}")
    base = model.armhubert if isinstance(model, ArmHubertForCTC) else model
    real = base._get_feature_vector_attention_mask(expected[0].shape[1], mask)  # (B, T)
    for runtime, outputs in (("PyTorch", expected), ("ONNX Runtime", got)):
        for name, output in zip(wrapper.output_names, outputs):
            refuse_non_finite(runtime, name, output, real)
    return wrapper.output_names, expected, got, real


def real_frames(output: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The values of `output` (B, T, H), or stacked (N, B, T, H), on the real frames of the (B, T) mask."""
    return output[real if output.dim() == 3 else real[None].expand(output.shape[0], -1, -1)]


def refuse_non_finite(runtime: str, name: str, output: torch.Tensor, real: torch.Tensor) -> None:
    """Raise NonFiniteOutputError when `output` holds NaN or inf on a real frame (NaN would slip through max())."""
    values = real_frames(output, real)
    if values.isfinite().all():
        return
    nan, inf = values.isnan().sum().item(), values.isinf().sum().item()
    if output.dim() == 4:  # stacked hidden states: name the first layer that has them
        name = f"{name}[{next(i for i, layer in enumerate(output) if not real_frames(layer, real).isfinite().all())}]"
    cause = ("the model itself gives them (NaN weights or an overflow), so the export cannot be checked"
             if runtime == "PyTorch" else "where PyTorch's are finite: the ONNX model computes something else")
    raise NonFiniteOutputError(f"{runtime}'s {name} has {nan} NaN and {inf} infinite values on the real frames of "
                               f"the check batch: {cause}.")


def max_difference(model: ArmHubertModel | ArmHubertForCTC, session, values: torch.Tensor, mask: torch.Tensor,
                   hidden_states: bool = False) -> float:
    """Largest |ONNX Runtime - PyTorch| over the real frames of every output (NonFiniteOutputError on NaN/inf)."""
    _, expected, got, real = run_both(model, session, values, mask, hidden_states)
    return max(real_frames(have - want, real).abs().max().item() for want, have in zip(expected, got))


def int8_errors(model: ArmHubertModel | ArmHubertForCTC, session, values: torch.Tensor, mask: torch.Tensor,
                hidden_states: bool = False) -> list[OutputError]:
    """Cosine similarity and relative error of an int8 model's outputs (and layers) against fp32 PyTorch."""
    names, expected, got, real = run_both(model, session, values, mask, hidden_states)
    return output_errors(names, expected, got, real)


def speech_batch(files: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio files (resampled to 16 kHz) as a right-padded (B, S) batch and its (B, S) attention mask."""
    from armhubert_training.audio import load_audio

    waveforms = [torch.from_numpy(load_audio(str(f))) for f in files]
    values = torch.zeros(len(waveforms), max(len(w) for w in waveforms))
    mask = torch.zeros(values.shape, dtype=torch.long)
    for i, waveform in enumerate(waveforms):
        values[i, : len(waveform)], mask[i, : len(waveform)] = waveform, 1
    return values, mask


def bundled_speech(count: int = 4) -> list[Path]:
    """The first `count` utterances of the bundled LibriSpeech sample (empty outside a repository checkout)."""
    return sorted(BUNDLED_AUDIO.rglob("*.flac"))[:count] if BUNDLED_AUDIO.is_dir() else []


def int8_path_for(output: Path) -> Path:
    """Where the int8 model goes next to the fp32 one: armhubert.onnx -> armhubert.int8.onnx."""
    return output.with_name(f"{output.stem}.int8{output.suffix or '.onnx'}")


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
    parser.add_argument("--no-check", action="store_true", help="Skip the ONNX Runtime check of the fp32 model.")
    int8 = parser.add_argument_group("int8")
    int8.add_argument("--quantize", choices=["int8"], default=None,
                      help="Also write an int8 model (ONNX Runtime dynamic quantisation of the Linear layers) "
                           "next to OUTPUT: armhubert.onnx -> armhubert.int8.onnx.")
    int8.add_argument("--int8-conv-encoder", action="store_true",
                      help="Quantise the conv encoder's layers too (all but the first, which reads the waveform): "
                           "the int8 model is made from a second export whose convs are matrix products. A smaller "
                           "file with about 4x the error of the default, and not faster on the CPUs measured "
                           "(docs/deployment.md); the check still applies.")
    int8.add_argument("--int8-keep-fp32", nargs="+", default=[], metavar="REGEX",
                      help="Linear layers that stay fp32 in the int8 model: regular expressions searched in "
                           "their module names, e.g. 'encoder.layers.11' or 'feed_forward.output_dense'.")
    int8.add_argument("--int8-check-audio", nargs="+", type=Path, default=None, metavar="FILE",
                      help="Speech files the int8 model is checked on, as one padded batch (default: the first 4 "
                           "utterances of data/tiny-librispeech; random audio when that is absent).")
    int8.add_argument("--int8-max-error", type=float, default=DEFAULT_MAX_RELATIVE_ERROR,
                      help="Largest relative error ||int8 - fp32|| / ||fp32|| on real frames that the int8 "
                           "check accepts, for every output (every layer with --hidden-states); default "
                           f"{DEFAULT_MAX_RELATIVE_ERROR}.")
    int8.add_argument("--accept-int8-error", action="store_true",
                      help="Keep the int8 model and exit 0 even when its error exceeds --int8-max-error.")
    args = parser.parse_args(argv)
    int8_only = {"--int8-conv-encoder": args.int8_conv_encoder, "--int8-keep-fp32": args.int8_keep_fp32,
                 "--int8-check-audio": args.int8_check_audio is not None,
                 "--int8-max-error": args.int8_max_error != DEFAULT_MAX_RELATIVE_ERROR,
                 "--accept-int8-error": args.accept_int8_error}
    given = [option for option, used in int8_only.items() if used]
    if given and args.quantize is None:
        parser.error(f"{', '.join(given)}: for the int8 model only, which --quantize int8 writes; add it.")
    return args


def int8_check_batch(args: argparse.Namespace, config: ArmHubertConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The padded batch the int8 model is checked on, read before anything is exported:
    (values (B, S), attention mask (B, S), what it is)."""
    from armhubert_training.audio import AudioError

    files = args.int8_check_audio if args.int8_check_audio is not None else bundled_speech()
    if not files:
        values, mask = example_inputs(config, 3, 48000, seed=3)
        return values, mask, "random audio (no --int8-check-audio and no bundled speech)"
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        raise SystemExit(f"--int8-check-audio: no such file: {', '.join(missing)}. Nothing was exported; give "
                         "existing speech files (or leave the option out to check on the bundled utterances).")
    try:
        values, mask = speech_batch(files)
    except AudioError as error:
        raise SystemExit(f"--int8-check-audio: {error} Nothing was exported.") from error
    return values, mask, f"{len(files)} speech file(s)"


def check_fp32(model: ArmHubertModel | ArmHubertForCTC, path: Path, args: argparse.Namespace) -> float:
    """ONNX Runtime against PyTorch on two padded batches (dynamic batch and length): the largest difference on
    real frames. Exits non-zero past --atol; non-finite outputs also remove the file (it computes nothing usable)."""
    session = onnx_session(path)
    worst = 0.0
    try:
        for batch, samples in ((2, 24000), (3, 16123)):  # two shapes: dynamic batch and length
            values, mask = example_inputs(model.config, batch, samples, seed=batch)
            worst = max(worst, max_difference(model, session, values, mask, args.hidden_states))
    except NonFiniteOutputError as error:
        path.unlink()
        raise SystemExit(f"{error} Removed {path}.") from error
    print(f"ONNX Runtime vs PyTorch on padded batches: max |difference| on real frames = {worst:.2e}")
    if worst > args.atol:
        raise SystemExit(f"The ONNX model differs from PyTorch by {worst:.2e} > {args.atol:.0e}.")
    return worst


def write_int8(model: ArmHubertModel | ArmHubertForCTC, fp32_path: Path, args: argparse.Namespace,
               batch: tuple[torch.Tensor, torch.Tensor, str]) -> list[OutputError]:
    """Quantise the fp32 export and check it on `batch` (int8_check_batch); the int8 file stays only when
    its check passed (or --accept-int8-error): a failed or interrupted check removes it."""
    int8_path = int8_path_for(fp32_path)
    try:
        if args.int8_conv_encoder:
            export_int8_conv_encoder(model, int8_path, hidden_states=args.hidden_states, opset=args.opset,
                                     keep_fp32=args.int8_keep_fp32)
        else:
            quantize_onnx_int8(fp32_path, int8_path, keep_fp32=args.int8_keep_fp32)
        print(f"wrote {int8_path} ({int8_path.stat().st_size / 2**20:.1f} MiB)")
        return check_int8(model, int8_path, args, batch)
    except BaseException:
        int8_path.unlink(missing_ok=True)
        raise


def check_int8(model: ArmHubertModel | ArmHubertForCTC, path: Path, args: argparse.Namespace,
               batch: tuple[torch.Tensor, torch.Tensor, str]) -> list[OutputError]:
    """The int8 model against fp32 PyTorch on `batch` (int8_check_batch); exits non-zero (and removes the file)
    past the bound or on non-finite outputs."""
    values, mask, source = batch
    try:
        errors = int8_errors(model, onnx_session(path), values, mask, args.hidden_states)
    except NonFiniteOutputError as error:
        path.unlink()
        raise SystemExit(f"{error} Removed {path}.") from error
    print(f"int8 vs fp32 PyTorch on {source}, real frames:\n{error_table(errors)}")
    worst = max(errors, key=lambda e: e.relative_error)
    if worst.relative_error > args.int8_max_error:
        message = (f"The int8 model's {worst.name} differs from fp32 by a relative error of "
                   f"{worst.relative_error:.3f} > --int8-max-error {args.int8_max_error:g}.")
        if not args.accept_int8_error:
            path.unlink()
            raise SystemExit(f"{message} Removed {path}. Keep layers in fp32 (--int8-keep-fp32), use the "
                             "fp32 model, or pass --accept-int8-error to keep it anyway.")
        print(f"WARNING: {message} Kept because of --accept-int8-error.")
    return errors


def main(argv: Sequence[str] | None = None) -> float | list[OutputError] | None:
    """Returns the fp32 check's largest difference, or with --quantize the int8 model's errors."""
    args = parse_args(argv)
    if args.model:
        model = load_student(args.model)
    else:
        torch.manual_seed(0)
        model = ArmHubertModel(ArmHubertConfig.from_preset(args.preset, projection_dim=0)).eval()
    broken = non_finite_weights(model)
    if broken:
        raise SystemExit(f"{args.model or args.preset} has non-finite (NaN or inf) weights in {len(broken)} tensor(s): "
                         f"{', '.join(broken[:5])}{', ...' if len(broken) > 5 else ''}. Nothing was exported: its "
                         "outputs would be NaN. Export a checkpoint from before training diverged.")
    int8_batch = int8_check_batch(args, model.config) if args.quantize else None
    path = export_student(model, args.output, hidden_states=args.hidden_states, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    worst = None if args.no_check else check_fp32(model, path, args)
    if args.quantize is None:
        return worst
    return write_int8(model, path, args, int8_batch)


if __name__ == "__main__":
    main()
