"""ArmHubert: the student network of Recycle-and-Distill (Interspeech 2023) as a Transformers model.

The network is a narrow HuBERT (conv feature encoder -> Transformer encoder, post-LN) with two
additions from the paper:

* attention map reusing: layers whose `reuse_pattern` entry is False have no query/key
  projections; they apply the attention map of the nearest preceding normal layer to their own
  values;
* per-layer distillation heads (`projection_dim`) and layer gradient scaling, used while the
  student learns from a HuBERT/WavLM teacher (see `run_distill.py`).

Two CTC heads turn a student into a recogniser: `ArmHubertForCTC` (a Linear on the last layer, for
full fine-tuning) and `ArmHubertForSuperbCTC` (SUPERB's ASR protocol: frozen student, learned
weighted sum of its layers, BiLSTM); see `run_asr_ctc.py`. `ArmHubertForSequenceClassification`
classifies utterances, with SUPERB's utterance-level protocol or full fine-tuning; see
`run_audio_classification.py`. `ArmHubertForSuperbDiarization` is SUPERB's speaker diarization head
(frozen student, weighted sum, LSTM, two speaker activities per frame); see `run_diarization.py`.
`ArmHubertForXVector` embeds speakers for verification with SUPERB's x-vector head; see
`run_speaker_verification.py`.

Unlike the authors' implementation, every item of a padded batch gives the same outputs as that
item alone: the first conv's GroupNorm and all attention maps see real frames only.

The span mask of masking distillation (`compute_span_mask`, also the models' SpecAugment) closes the
file, after the models; it lives here because a saved model carries this file and nothing else of
the repository.

    waveform (B, S) -> conv encoder (B, C, T) -> LayerNorm [-> Linear] -> dropout
      -> [mask embedding on masked frames] -> zero padding -> + positional conv -> LayerNorm
      -> L x { x = LN(x + Attn(x)); x = LN(x + FFN(x)) } -> last_hidden_state (B, T, hidden)
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import (AutoConfig, AutoModel, AutoModelForAudioClassification,
                          AutoModelForAudioFrameClassification, AutoModelForAudioXVector, AutoModelForCTC,
                          PreTrainedModel)
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (CausalLMOutput, SequenceClassifierOutput, TokenClassifierOutput,
                                           XVectorOutput)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput, logging

try:  # loaded as remote code (a package next to config.json) or from the repo (top-level modules)
    from .configuration_armhubert import ArmHubertConfig
except ImportError:
    from configuration_armhubert import ArmHubertConfig

logger = logging.get_logger(__name__)


def grad_scale(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward (the same values); the gradient is multiplied by `scale` backward.

    Written with `detach` rather than as an autograd.Function: under torch.compile (Inductor) the
    Function's scaling was lost from the compiled backward, silently (gradients 4x too large in a
    2-layer student), while plain tensor ops compile like the rest of the model.
    """
    frozen = tensor.detach()
    return frozen + (tensor - frozen) * scale  # + 0 forward, gradient * scale backward


def conv_output_lengths(input_lengths: torch.Tensor | int, conv_kernel: Sequence[int],
                        conv_stride: Sequence[int]) -> torch.Tensor | int:
    """Frames the conv feature encoder makes of `input_lengths` samples (a model-free function, so that
    the distillation collator can compute the student's frames in a DataLoader worker)."""
    for kernel, stride in zip(conv_kernel, conv_stride):
        input_lengths = torch.div(input_lengths - kernel, stride, rounding_mode="floor") + 1
    return input_lengths


def frame_attention_mask(num_frames: int, attention_mask: torch.Tensor, conv_kernel: Sequence[int],
                         conv_stride: Sequence[int]) -> torch.Tensor:
    """Sample-level mask (B, S) -> frame-level bool mask (B, num_frames), True = real frame."""
    lengths = conv_output_lengths(attention_mask.sum(-1).long(), conv_kernel, conv_stride)
    return torch.arange(num_frames, device=attention_mask.device)[None, :] < lengths[:, None]


def _is_tracing() -> bool:
    """True while exporting or compiling, where data-dependent input checks cannot run."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


@dataclass
class ArmHubertModelOutput(ModelOutput):
    """Output of [`ArmHubertModel`].

    Args:
        last_hidden_state: (B, T, hidden) output of the last layer.
        hidden_states: L + 1 tensors (B, T, hidden): index 0 = encoder input (after the positional
            conv and LayerNorm), index i = output of layer i. Set with `output_hidden_states=True`.
        attentions: L tensors (B, heads, T, T): the attention weights each layer applied (for a
            reuse layer, the reused map). Set with `output_attentions=True`.
        projected_hidden_states: L tensors (B, T, projection_dim), the distillation heads applied
            to each layer's output. Set with `output_hidden_states=True` when the model has heads.
        extract_features: (B, T, conv_dim[-1]) output of the conv feature encoder.
    """

    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    projected_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    extract_features: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------
# Conv feature encoder
# ----------------------------------------------------------------------------------------------


def conv_as_matmul(frames: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """`conv` applied to time-major `frames` (B, T, C_in) as one matrix product -> (B, T', C_out).

    Time is cut into blocks of `stride` steps, (B, T / stride, stride * C_in): a reshape, not a copy
    of the input. Output step t reads blocks t .. t + n - 1 (n = ceil(kernel / stride)), so one
    product with the n blocks' weights side by side, (n * C_out, stride * C_in), gives each block's
    share of the n outputs it feeds, and output t adds share j of block t + j. With kernel == stride
    (the k1 and k2/s2 layers, and k10/s5 on the waveform, whose two blocks are exact) it is the
    conv itself; a k3/s2 layer does a third more multiply-adds (zero taps) to avoid copying its input
    into windows.

    Its use is int8 (docs/deployment.md): dynamic quantisation turns a product with a constant weight
    into an integer one, with one scale for the whole input. Speech frames differ in level by 250-1000x
    between pauses and words, and the feature projection's LayerNorm brings every frame back to unit
    size, so one scale would erase the quiet frames (relative error 0.3-0.5). Each block is therefore
    divided by its largest magnitude before the product and multiplied back after it (exact in fp32),
    which gives every block its own int8 scale. In fp32, oneDNN's convs are faster on CPUs.
    """
    batch, steps, channels = frames.shape
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    shares = -(-kernel // stride)
    out_steps = (steps - kernel) // stride + 1
    if shares * stride > kernel:  # the last block reaches past the input by up to shares * stride - kernel steps
        frames = F.pad(frames, (0, 0, 0, shares * stride - kernel))
    blocks = frames[:, : (out_steps + shares - 1) * stride].reshape(batch, out_steps + shares - 1, stride * channels)
    # (C_out, C_in, k) -> taps padded to shares * stride -> (shares * C_out, stride * C_in), rows share-major.
    weight = F.pad(conv.weight, (0, shares * stride - kernel))
    weight = weight.view(conv.out_channels, channels, shares, stride).permute(2, 0, 3, 1)
    weight = weight.reshape(shares * conv.out_channels, stride * channels)
    bias = conv.bias
    if bias is not None and shares > 1:  # added once, with share 0
        bias = F.pad(bias, (0, (shares - 1) * conv.out_channels))
    block_scale = blocks.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(blocks.dtype).tiny)  # (B, blocks, 1)
    per_block = F.linear(blocks / block_scale, weight) * block_scale  # (B, T' + shares - 1, shares * C_out)
    if bias is not None:
        per_block = per_block + bias
    out = per_block[:, :out_steps, : conv.out_channels]
    for share in range(1, shares):
        out = out + per_block[:, share : share + out_steps, share * conv.out_channels : (share + 1) * conv.out_channels]
    return out


class ArmHubertConvLayer(GradientCheckpointingLayer):
    """Conv1d -> [GroupNorm with one group per channel, first layer only] -> activation.

    Three layouts of the same computation, chosen by the feature encoder: channels first (B, C, S);
    channels last as a height-1 image (B, C, 1, S) whose memory is (B, S, C); and time-major
    (B, S, C) with the conv as a matrix product (`conv_as_matmul`).
    """

    def __init__(self, config: ArmHubertConfig, layer_id: int):
        super().__init__()
        in_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        out_dim = config.conv_dim[layer_id]
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=config.conv_kernel[layer_id],
                              stride=config.conv_stride[layer_id], bias=config.conv_bias)
        self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True) if layer_id == 0 else None
        self.activation = ACT2FN[config.feat_extract_activation]

    def forward(self, hidden_states: torch.Tensor, lengths: torch.Tensor | None = None,
                time_major: bool = False) -> torch.Tensor:
        """hidden_states (B, C_in, S) -> (B, C_out, S'); `lengths` (B,) = real steps of the output.

        Also takes (B, C_in, 1, S) in channels-last layout (see ArmHubertFeatureEncoder) and then
        returns (B, C_out, 1, S') in that layout; with `time_major` (layers without a norm),
        (B, S, C_in) -> (B, S', C_out).
        """
        if time_major:
            if self.layer_norm is not None:
                raise ValueError("The time-major layout is for the conv layers without a norm.")
            return self.activation(conv_as_matmul(hidden_states, self.conv))
        if hidden_states.dim() == 4:
            conv = self.conv
            hidden_states = F.conv2d(hidden_states, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]))
            hidden_states = hidden_states.contiguous(memory_format=torch.channels_last)
        else:
            hidden_states = self.conv(hidden_states)
        if self.layer_norm is not None:
            if lengths is None:
                hidden_states = self.layer_norm(hidden_states)
            else:
                hidden_states = self._masked_group_norm(hidden_states, lengths)
        return self.activation(hidden_states)

    def _masked_group_norm(self, hidden_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # One group per channel: normalise each channel over the real time steps of its own sample,
        # so that padding does not change the statistics (plain GroupNorm would count it).
        # The statistics in fp32 whatever the model's dtype, as nn.GroupNorm computes them: in fp16 a count
        # of steps over 65504 (20.5 s of audio) and the sums over loud audio would overflow.
        batch, *_, steps = hidden_states.shape
        dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        broadcast = [1] * (hidden_states.dim() - 2)  # 1 for the channel axis (and the height axis of 4-D input)
        real = torch.arange(steps, device=hidden_states.device)[None, :] < lengths[:, None]
        real = real.view(batch, *broadcast, steps).float()  # (B, 1, [1,] S')
        count = real.sum(-1, keepdim=True).clamp(min=1)
        mean = (hidden_states * real).sum(-1, keepdim=True) / count
        centered = hidden_states - mean
        var = (centered.square() * real).sum(-1, keepdim=True) / count
        scale = torch.rsqrt(var + self.layer_norm.eps) * self.layer_norm.weight.float().view(-1, *broadcast[1:], 1)
        return torch.addcmul(self.layer_norm.bias.float().view(-1, *broadcast[1:], 1), centered, scale).to(dtype)


class ArmHubertFeatureEncoder(nn.Module):
    """Waveform (B, S) -> features (B, conv_dim[-1], T)."""

    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.conv_layers = nn.ModuleList(ArmHubertConvLayer(config, i) for i in range(config.num_feat_extract_layers))
        # Set by the ONNX export for an int8 model whose conv encoder is quantised too: the convs then
        # run as matrix products in time-major layout (`conv_as_matmul`), the form int8 covers.
        self.convs_as_matmul = False

    def _freeze_parameters(self) -> None:
        for param in self.parameters():
            param.requires_grad = False

    def _gradients_reach_weights(self) -> bool:
        return torch.is_grad_enabled() and any(param.requires_grad for param in self.parameters())

    def _checkpoints_reentrantly_with_trainable_weights(self) -> bool:
        return (self.training and any(layer.gradient_checkpointing for layer in self.conv_layers)
                and self._gradients_reach_weights())

    def forward(self, input_values: torch.Tensor, first_layer_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_values (B, S), first_layer_lengths (B,) real steps after the first conv -> (B, C, T)."""
        if self.training and torch.compiler.is_compiling():
            return self._forward_eagerly(input_values, first_layer_lengths)
        return self._forward(input_values, first_layer_lengths)

    # Left to eager when compiled for training: Inductor's lowering of the conv backward specialises on
    # the frame count (a recompile for every batch length) and, with a dynamic number of samples, failed
    # on some lengths (invalid value ranges, wrong reshapes); marking the length dynamic does not help,
    # the compiled backward still guards on a conv layer's frame count. The convs run as library kernels either
    # way, so compiling them gains little; the Transformer after them compiles with a dynamic frame
    # count. In eval mode the front end is compiled with the rest (`fullgraph=True` works).
    @torch.compiler.disable
    def _forward_eagerly(self, input_values: torch.Tensor, first_layer_lengths: torch.Tensor | None) -> torch.Tensor:
        return self._forward(input_values, first_layer_lengths)

    def _forward(self, input_values: torch.Tensor, first_layer_lengths: torch.Tensor | None) -> torch.Tensor:
        if self.convs_as_matmul:
            # The first conv, which stays fp32, with its norm in channels-first layout, where ONNX Runtime
            # reduces over time fastest; the others time-major.
            hidden_states = self.conv_layers[0](input_values[:, None], first_layer_lengths).transpose(1, 2)
            for conv_layer in self.conv_layers[1:]:
                hidden_states = conv_layer(hidden_states, time_major=True)
            return hidden_states.transpose(1, 2)
        # On a CPU, batches the convs are not trained on run as height-1 2-D convs in channels-last
        # layout, where oneDNN need not reorder every activation: the whole model ran 1.2x faster on
        # 8 x 10 s (2 cores); for one utterance the layout change costs more than it saves. The result,
        # (B, C, T) laid out as (B, T, C), is what the feature projection wants after its transpose.
        # Their backward is slower in that layout (forward and backward 1.4x slower at 4 x 4 s, 1.8x at
        # 8 x 10 s: benchmarks/front_end_layouts.py), so batches that train the convs stay channels first.
        # `_is_tracing()` first: a traced batch size compared with 1 would become a guard of the export.
        channels_last = (not _is_tracing() and input_values.device.type == "cpu" and input_values.shape[0] > 1
                         and not self._gradients_reach_weights())
        return self.convs_in_layout(input_values, first_layer_lengths, channels_last)

    def convs_in_layout(self, input_values: torch.Tensor, first_layer_lengths: torch.Tensor | None = None,
                        channels_last: bool = False) -> torch.Tensor:
        """The conv layers in the layout given: (B, S) -> (B, C, T), laid out as (B, T, C) when channels last.
        `forward` picks the layout; benchmarks and tests compare the two."""
        hidden_states = input_values[:, None, None] if channels_last else input_values[:, None]
        if self._checkpoints_reentrantly_with_trainable_weights():
            # A reentrant checkpoint only backpropagates into its weights when one of its tensor inputs
            # requires grad; the waveform never does, so mark it (as HubertFeatureEncoder does).
            hidden_states = hidden_states.detach().requires_grad_()
        for i, conv_layer in enumerate(self.conv_layers):
            hidden_states = conv_layer(hidden_states, first_layer_lengths if i == 0 else None)
        return hidden_states.squeeze(2) if channels_last else hidden_states


class ArmHubertFeatureProjection(nn.Module):
    """LayerNorm over conv channels, a Linear only when their width differs from hidden_size, dropout."""

    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        needs_projection = config.conv_dim[-1] != config.hidden_size
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size) if needs_projection else None
        self.dropout = nn.Dropout(config.feat_proj_dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden_states = self.layer_norm(features)
        if self.projection is not None:
            hidden_states = self.projection(hidden_states)
        return self.dropout(hidden_states)


# ----------------------------------------------------------------------------------------------
# Transformer encoder
# ----------------------------------------------------------------------------------------------


class ArmHubertPositionalConvEmbedding(nn.Module):
    """Grouped Conv1d with weight norm over the kernel axis, 'same' padding, then GELU.

    Three forms of the same conv: from spectra for fp32 inference on a CPU (`_conv_from_spectra`); a
    height-1 2-D conv in channels-last layout otherwise on a CPU (with gradients, or not fp32); and
    `nn.Conv1d` on other devices and when exported or compiled.
    """

    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        kernel = config.num_conv_pos_embeddings
        conv = nn.Conv1d(config.hidden_size, config.hidden_size, kernel_size=kernel, padding=kernel // 2,
                         groups=config.num_conv_pos_embedding_groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        # An even kernel with padding k//2 yields one frame too many: drop the last one.
        self.num_pad_remove = 1 if kernel % 2 == 0 else 0
        self.activation = ACT2FN["gelu"]
        # (weight, its spectrum) for the CPU inference path (`_conv_from_spectra`), renewed when the weight
        # differs; not a buffer, since it is derived from the weights and never saved.
        self._kernel_spectrum_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) -> (B, T, hidden)."""
        if self.training and torch.compiler.is_compiling():
            return self._forward_eagerly(hidden_states)
        return self._forward(hidden_states)

    # Left to eager when compiled for training, as the conv feature encoder: Inductor's conv backward
    # specialises on the frame count, which would recompile the whole encoder for every batch length.
    @torch.compiler.disable
    def _forward_eagerly(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self._forward(hidden_states)

    def _forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        on_cpu = hidden_states.device.type == "cpu" and not _is_tracing()
        if on_cpu and hidden_states.dtype == torch.float32 and not torch.is_grad_enabled():
            return self.activation(self._conv_from_spectra(hidden_states))
        if on_cpu:
            # (B, T, hidden) as it lies in memory is (B, hidden, 1, T) in channels-last layout, for
            # which oneDNN's grouped conv is 1.7-2.5x faster than for (B, hidden, T): no copy is made.
            conv = self.conv
            hidden_states = F.conv2d(hidden_states.transpose(1, 2).unsqueeze(2), conv.weight.unsqueeze(2), conv.bias,
                                     padding=(0, conv.padding[0]), groups=conv.groups).squeeze(2)
        else:
            hidden_states = self.conv(hidden_states.transpose(1, 2))
        if self.num_pad_remove:
            hidden_states = hidden_states[:, :, : -self.num_pad_remove]
        return self.activation(hidden_states).transpose(1, 2)

    def _conv_from_spectra(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, hidden) -> the conv's output (B, T, hidden), from spectra (`grouped_conv_from_spectra`): CPU
        inference. The kernel is long (128 taps), so the product of spectra costs a fraction of the direct
        conv (in a forward of 1 x 10 s at 1 thread, 17 ms with the weight's comparison, against 55 ms for
        oneDNN's grouped conv); equal to the conv to fp32 rounding (3e-6 on armhubert)."""
        conv = self.conv
        return grouped_conv_from_spectra(hidden_states, self._kernel_spectrum(), conv.kernel_size[0],
                                         conv.padding[0], hidden_states.shape[1], conv.bias)

    def _kernel_spectrum(self) -> torch.Tensor:
        """The kernel's spectrum (`kernel_spectrum`). Computing it takes longer than the whole conv from
        spectra, so it is kept with the weight it came from and renewed whenever the weight differs
        (compared by value: a write through `.data` changes no version counter)."""
        weight = self.conv.weight  # (C, C/G, kernel), from the weight-norm parameters
        cached = self._kernel_spectrum_cache
        if cached is None or cached[0].dtype != weight.dtype or not torch.equal(cached[0], weight):
            cached = (weight, kernel_spectrum(weight, self.conv.groups))
            self._kernel_spectrum_cache = cached
        return cached[1]


def kernel_spectrum(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight (C, C/G, kernel) -> (G, F, C/G, C/G) complex: each group's kernel flipped (so
    that the product of spectra convolves as the conv correlates), as spectra of length 2 * block, the
    overlap-add block of `grouped_conv_from_spectra` being a power of two >= kernel - 1 frames."""
    kernel = weight.shape[-1]
    block = 1 << (kernel - 2).bit_length() if kernel > 1 else 1
    spectrum = torch.fft.rfft(weight.flip(-1), 2 * block)  # (C, C/G, F)
    spectrum = spectrum.view(groups, weight.shape[0] // groups, weight.shape[1], block + 1)
    return spectrum.permute(0, 3, 2, 1).contiguous()


def grouped_conv_from_spectra(hidden_states: torch.Tensor, spectrum: torch.Tensor, kernel: int, padding: int,
                              out_frames: int, bias: torch.Tensor | None) -> torch.Tensor:
    """A grouped Conv1d (stride 1, zero `padding` on both sides) computed from spectra, time-major:
    (B, T, C) -> (B, out_frames, C), out_frames <= T + 2 * padding - kernel + 1; `spectrum` is
    `kernel_spectrum(weight, groups)`.

    For a long kernel (the positional convs' 128 taps) the products of spectra cost a fraction of the
    direct conv. Overlap-add: the frames are cut into blocks of `block` frames; each block's full
    convolution with the kernel (FFTs of length 2 * block) is added where it starts; the conv's output is
    a slice of the sum. Equal to the conv to rounding.
    """
    batch, frames, channels = hidden_states.shape
    groups, freqs, per_group, _ = spectrum.shape
    block = freqs - 1
    blocks = -(-frames // block)
    padded = F.pad(hidden_states, (0, 0, 0, blocks * block - frames)).reshape(batch, blocks, block, channels)
    spectra = torch.fft.rfft(padded, 2 * block, dim=2)  # (B, blocks, F, C)
    spectra = spectra.view(batch * blocks, freqs, groups, per_group).permute(2, 1, 0, 3)  # (G, F, B * blocks, C/G)
    products = torch.matmul(spectra, spectrum).permute(2, 1, 0, 3).reshape(batch, blocks, freqs, channels)
    pieces = torch.fft.irfft(products, 2 * block, dim=2)  # (B, blocks, 2 * block, C); block b's starts at b * block
    full = F.pad(pieces[:, :, :block], (0, 0, 0, 0, 0, 1))  # (B, blocks + 1, block, C)
    full[:, 1:] += pieces[:, :, block:]
    full = full.view(batch, (blocks + 1) * block, channels)  # the full convolution, and zeros after it
    start = kernel - 1 - padding  # the conv's output frame t is frame t + start of it
    out = full[:, start : start + out_frames]
    return out if bias is None else out + bias


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax(Q Kᵀ · scaling + mask) V, Transformers' eager attention with a key mask.

    query, key, value: (B, heads, T, head_dim); attention_mask: (B, 1, 1, T), bool (True = real key) or
    additive (0 or -inf, as the ONNX export passes it). Returns the context (B, T, heads, head_dim) and
    the probabilities (B, heads, T, T).
    """
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        # The dtype's lowest value, not -inf: the same probabilities wherever a row has a real key, and a
        # row with none (a padding-only item) stays finite instead of filling the batch's gradients with NaN.
        # In place: a fresh tensor, not needed backward.
        scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask
    if scores.dtype == torch.float32 and not torch.is_grad_enabled() and not _is_tracing():
        # Inference: softmax in place, sparing a (B, heads, T, T) tensor (5% faster on CPU).
        weights = torch.softmax(scores, dim=-1, out=scores)
    else:
        weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    context = torch.matmul(F.dropout(weights, p=dropout, training=module.training), value)
    return context.transpose(1, 2).contiguous(), weights


class ArmHubertAttention(nn.Module):
    """Multi-head self-attention, or its attention-map-reusing variant (no query/key projections).

    `config._attn_implementation` picks the kernel: `"sdpa"` (the default) runs the fused
    `scaled_dot_product_attention` wherever the probabilities are not needed; `"eager"` computes
    the explicit softmax everywhere. The probabilities are always explicit when asked for
    (`output_attentions`) or when a following reuse layer needs them (`legacy_double_softmax`, or
    any reuse under `"eager"`).

    A reuse layer applies the map of the nearest preceding normal layer to its own values
    (docs/method.md §1.1): given that layer's stacked queries and keys it reruns the attention
    kernel on them (the same probabilities, without the (B, heads, T, T) tensor whose memory
    traffic made reuse layers slower than normal ones on a GPU); given probabilities it multiplies
    by them, after a second softmax in `legacy_double_softmax` mode (always per sample here).
    """

    is_causal = False  # read by Transformers' attention functions

    def __init__(self, config: ArmHubertConfig, reuses_map: bool):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.reuses_map = reuses_map
        self.legacy_double_softmax = config.reuse_mode == "legacy_double_softmax"
        # Reuse layers have no attention dropout (as in the paper's implementation).
        self.dropout = 0.0 if reuses_map else config.attention_dropout
        if not reuses_map:
            self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
            self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        batch, frames, _ = projected.shape
        return projected.view(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)

    def _attention_function(self, return_probs: bool) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
        implementation = self.config._attn_implementation or "sdpa"
        if return_probs or implementation == "eager":
            return eager_attention_forward
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        reused_map: torch.Tensor | None = None,
        return_probs: bool = False,
        return_query_key: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            hidden_states: (B, T, hidden).
            key_mask: (B, T) bool, True = real frame; padded keys get no weight. None = no padding.
            reused_map: the map of the preceding normal layer (reuse layers only): its probabilities
                (B, heads, T, T), or its queries and keys stacked, (2, B, heads, T, head_dim), from
                which the attention kernel recomputes the same probabilities. One tensor, not a pair,
                so that gradient checkpointing sees it and carries its gradient.
            return_probs: return the probabilities applied (forces the explicit path).
            return_query_key: (normal layers) return the stacked queries and keys for a reuse layer.

        Returns:
            output (B, T, hidden), and the probabilities (B, heads, T, T) when `return_probs`, the
            stacked queries and keys when `return_query_key`, else None.
        """
        batch, frames, hidden = hidden_states.shape
        value = self._split_heads(self.v_proj(hidden_states))
        # (B, 1, 1, T) broadcasts over heads and queries.
        mask = key_mask[:, None, None, :] if key_mask is not None else None
        attend = self._attention_function(return_probs)
        attend_mask = mask
        if mask is not None and torch.onnx.is_in_onnx_export():
            # Exported, a boolean mask becomes a Where over the scores (and, in the fused kernel's graph, a NaN
            # guard after the softmax) in every layer; an additive one is a single Add (ONNX Runtime: 30 of
            # 410 ms less at 1 x 10 s).
            attend_mask = torch.zeros(mask.shape, dtype=value.dtype, device=mask.device).masked_fill(~mask, -math.inf)

        if self.reuses_map:
            if reused_map is None:
                raise ValueError("A reuse layer needs the attention map of a preceding normal layer.")
            if reused_map.dim() == 5:
                query, key = reused_map.unbind(0)
                context, weights = attend(self, query, key, value, attend_mask, scaling=self.scaling, dropout=0.0)
            else:
                weights = reused_map
                if self.legacy_double_softmax:
                    if mask is not None:
                        weights = weights.masked_fill(~mask, torch.finfo(weights.dtype).min)  # as in eager
                    weights = torch.softmax(weights.float(), dim=-1).to(value.dtype)
                context = torch.matmul(weights, value).transpose(1, 2)
        else:
            query = self._split_heads(self.q_proj(hidden_states))
            key = self._split_heads(self.k_proj(hidden_states))
            context, weights = attend(self, query, key, value, attend_mask, scaling=self.scaling,
                                      dropout=self.dropout if self.training else 0.0)
            if return_query_key:
                weights = torch.stack([query, key])
            elif not return_probs:
                weights = None

        # context: (B, T, heads, head_dim)
        return self.out_proj(context.reshape(batch, frames, hidden)), weights


class ArmHubertFeedForward(nn.Module):
    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]
        self.intermediate_dropout = nn.Dropout(config.activation_dropout)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(hidden_states)))
        return self.output_dropout(self.output_dense(hidden_states))


class ArmHubertEncoderLayer(GradientCheckpointingLayer):
    """Post-LN Transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config: ArmHubertConfig, reuses_map: bool):
        super().__init__()
        self.attention = ArmHubertAttention(config, reuses_map)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = ArmHubertFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        reused_map: torch.Tensor | None = None,
        return_probs: bool = False,
        return_query_key: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(hidden_states, key_mask, reused_map, return_probs, return_query_key)
        hidden_states = self.layer_norm(hidden_states + self.dropout(attended))
        hidden_states = self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))
        return hidden_states, weights


class ArmHubertEncoder(nn.Module):
    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.config = config
        self.pos_conv_embed = ArmHubertPositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        pattern = config.reuse_pattern
        self.layers = nn.ModuleList(ArmHubertEncoderLayer(config, reuses_map=not normal) for normal in pattern)
        # A normal layer must hand its probabilities on when the next layer reuses them.
        self.map_is_reused = [i + 1 < len(pattern) and not pattern[i + 1] for i in range(len(pattern))]
        num_layers = config.num_hidden_layers
        # Layer gradient scaling (docs/method.md §1.2): m_i = (L - i) / (L - i + 1).
        self.grad_scales = [(num_layers - i) / (num_layers - i + 1) for i in range(num_layers)]

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """
        Args:
            hidden_states: (B, T, hidden) encoder input.
            key_mask: (B, T) bool, True = real frame.

        Returns:
            last hidden state (B, T, hidden); the hidden states (input + each layer, when asked);
            the attention weights (when asked); each layer's output as seen by the distillation
            heads (gradient-scaled when `layer_grad_scale`, when hidden states are asked for).
        """
        if key_mask is not None:
            hidden_states = hidden_states.masked_fill(~key_mask[..., None], 0.0)
        hidden_states = hidden_states + self.pos_conv_embed(hidden_states)
        hidden_states = self.dropout(self.layer_norm(hidden_states))

        all_hidden_states = [hidden_states] if output_hidden_states else []
        all_attentions, layer_outputs_for_heads = [], []
        reused_map = None
        scale_grads = self.config.layer_grad_scale and torch.is_grad_enabled()
        # A reused map travels as probabilities where the reuse layer needs them (the legacy second
        # softmax), where every layer is to use the explicit softmax ("eager"), and in an ONNX export, where
        # the fused kernel is an explicit softmax too: the reuse layer then skips Q Kᵀ and the softmax
        # (ONNX Runtime: 6 of armhubert's 12 layers). Else as queries and keys.
        reuse_probs = (self.config.reuse_mode == "legacy_double_softmax" or self.config._attn_implementation == "eager"
                       or torch.onnx.is_in_onnx_export())
        for i, layer in enumerate(self.layers):
            return_probs = output_attentions or (reuse_probs and self.map_is_reused[i])
            return_query_key = self.map_is_reused[i] and not return_probs
            hidden_states, weights = layer(hidden_states, key_mask, reused_map, return_probs, return_query_key)
            if not layer.attention.reuses_map:
                reused_map = weights
            for_heads = hidden_states
            if scale_grads:
                hidden_states = grad_scale(hidden_states, self.grad_scales[i])
                for_heads = grad_scale(hidden_states, 1.0 - self.grad_scales[i])
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
                layer_outputs_for_heads.append(for_heads)
            if output_attentions:
                all_attentions.append(weights)
        return hidden_states, all_hidden_states, all_attentions, layer_outputs_for_heads


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


class ArmHubertPreTrainedModel(PreTrainedModel):
    config_class = ArmHubertConfig
    config: ArmHubertConfig
    base_model_prefix = "armhubert"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["ArmHubertEncoderLayer"]

    def __init__(self, config: ArmHubertConfig, *inputs: Any, **kwargs: Any) -> None:
        # A field changed after the config was made (num_hidden_layers without reuse_pattern, say) is
        # checked here, and fails with what to fix instead of deep inside a module.
        config.check_values()
        super().__init__(config, *inputs, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Transformers calls this once per module that has parameters of its own (children first), so
        # each parameter is set by the module that owns it. The `init` functions skip tensors loaded
        # from a checkpoint.
        if isinstance(module, parametrize.ParametrizationList):
            # The positional conv's weight norm (the only parametrization here): direction v, norm g.
            weight_v, weight_g = module.original1, module.original0
            std = 2 * math.sqrt(1 / (self.config.num_conv_pos_embeddings * self.config.hidden_size))
            init.normal_(weight_v, 0.0, std)
            init.copy_(weight_g, torch.linalg.vector_norm(weight_v, dim=(0, 1), keepdim=True))
        elif isinstance(module, nn.Conv1d):
            if not parametrize.is_parametrized(module):
                init.kaiming_normal_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and getattr(module, "keeps_torch_init", False):
            # PyTorch's own Linear init, as s3prl's x-vector head has it (N(0, 0.02) weights and zero biases
            # through five ReLU layers leave so little signal that the ReLU outputs die in training).
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, 0.0, self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            # PyTorch's own LSTM init, restated because weights created on the meta device skip it.
            bound = 1 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        elif isinstance(module, ArmHubertModel):
            if module.masked_spec_embed is not None:
                init.uniform_(module.masked_spec_embed)
        elif isinstance(module, ArmHubertSuperbFeaturizer):
            init.zeros_(module.layer_weights)  # every layer weighs the same at the start, as in SUPERB
        elif isinstance(module, AMSoftmaxLoss):
            init.xavier_normal_(module.weight)  # as SUPERB's AMSoftmaxLoss

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor | int) -> torch.Tensor | int:
        """Number of conv output frames for inputs of `input_lengths` samples."""
        return conv_output_lengths(input_lengths, self.config.conv_kernel, self.config.conv_stride)

    def _get_feature_vector_attention_mask(self, num_frames: int, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sample-level mask (B, S) -> frame-level bool mask (B, T), True = real frame."""
        return frame_attention_mask(num_frames, attention_mask, self.config.conv_kernel, self.config.conv_stride)

    def _checks_input_values(self) -> bool:
        """Whether this forward checks values of its inputs (lengths, label ranges): on eager inference only.
        Each check reads a value back from the device, a host-device synchronisation on a GPU, and tracing
        cannot follow it. Training batches come from the collators, whose host copies of the lengths
        (`input_lengths`, `label_lengths`) are checked for free, and whose labels the data path encodes
        from the task's label set."""
        return not (self.training or _is_tracing())

    def _host_sample_lengths(self, attention_mask: torch.Tensor, input_lengths: Sequence[int] | None) -> torch.Tensor:
        """(B,) int64 CPU tensor: the real samples of each item, for what must be known on the host
        (packing, per-utterance random draws, length checks). `input_lengths`, the collator's host copy,
        costs nothing; without it they are read back from `attention_mask` (B, S), a host-device
        synchronisation on a GPU."""
        if input_lengths is None:
            return attention_mask.sum(-1).long().cpu()
        lengths = torch.as_tensor(input_lengths, dtype=torch.long, device="cpu")
        if lengths.shape != attention_mask.shape[:1]:
            raise ValueError(f"input_lengths must hold one length per item ({attention_mask.shape[0]}), got "
                             f"{tuple(lengths.shape)}.")
        if self._checks_input_values() and not torch.equal(lengths, attention_mask.sum(-1).long().cpu()):
            raise ValueError(f"input_lengths {lengths.tolist()} are not the real samples of the attention mask "
                             f"{attention_mask.sum(-1).tolist()}; leave them out, or give each row's number of ones.")
        return lengths

    def ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                 input_lengths: Sequence[int] | None = None, label_lengths: Sequence[int] | None = None
                 ) -> torch.Tensor:
        """CTC loss of per-frame `logits` (B, T, vocab_size) against `labels` (B, L), padded with -100.

        `attention_mask` (B, S) is the sample-level mask of the input; it gives each item's frame count.
        The blank is `config.pad_token_id`; reduction and zero_infinity come from the config.

        PyTorch's CTC loss takes the frame and label counts on the host. Given both as host ints,
        `input_lengths` (B real samples) and `label_lengths` (B label counts; each row of `labels` holds its
        labels first, then -100), nothing is read back from the device; otherwise the counts are read back
        from `attention_mask` and `labels`, as Transformers' CTC loss does. Both give the same loss.
        """
        if self._checks_input_values() and labels.numel() and labels.max() >= self.config.vocab_size:
            raise ValueError(f"Label ids must be < vocab_size ({self.config.vocab_size}), got {int(labels.max())}.")
        if input_lengths is None or label_lengths is None:
            logit_lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1).long())
            # Transformers' own CTC loss (`loss_type = "ForCTC"`), as HubertForCTC uses it.
            return self.loss_function(logits=logits, labels=labels, logit_lengths=logit_lengths,
                                      blank_token_id=self.config.pad_token_id,
                                      reduction=self.config.ctc_loss_reduction,
                                      zero_infinity=self.config.ctc_zero_infinity)
        frames = self._get_feat_extract_output_lengths(self._host_sample_lengths(attention_mask, input_lengths))
        targets = torch.as_tensor(label_lengths, dtype=torch.long, device="cpu")
        if targets.shape != labels.shape[:1] or ((targets < 0) | (targets > labels.shape[1])).any():
            raise ValueError(f"label_lengths must hold one label count per row of labels {tuple(labels.shape)}, "
                             f"none above {labels.shape[1]}; got {targets.tolist()}.")
        if self._checks_input_values() and not torch.equal(
                targets, ((labels != -100) & (labels != self.config.pad_token_id)).sum(-1).cpu()):
            raise ValueError(f"label_lengths {targets.tolist()} are not the label counts of labels (ids other than "
                             "-100 and the blank); leave them out, or give each row's count.")
        # The padded (B, L) labels with their counts are the targets Transformers' loss cuts out of them
        # (the same values, without its `masked_select`, which reads its output size back).
        log_probs = F.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)
        with torch.backends.cudnn.flags(enabled=False):
            return F.ctc_loss(log_probs, labels, frames.tolist(), targets.tolist(), blank=self.config.pad_token_id,
                              reduction=self.config.ctc_loss_reduction, zero_infinity=self.config.ctc_zero_infinity)


class ArmHubertModel(ArmHubertPreTrainedModel):
    """The bare student: waveform in, per-layer hidden states (and distillation projections) out."""

    def __init__(self, config: ArmHubertConfig, use_mask_embedding: bool = True):
        """`use_mask_embedding=False` (task models that never mask) leaves out `masked_spec_embed`."""
        super().__init__(config)
        self.feature_extractor = ArmHubertFeatureEncoder(config)
        self.feature_projection = ArmHubertFeatureProjection(config)
        # Learned mask embedding, written over masked frames (distillation, SpecAugment).
        self.masked_spec_embed = (nn.Parameter(torch.empty(config.hidden_size).uniform_()) if use_mask_embedding
                                  else None)
        self.encoder = ArmHubertEncoder(config)
        # Set by a task model whose train() keeps this student in eval mode (a frozen student): its
        # forwards are still training forwards, which skip the synchronising input checks.
        self.feeds_training_model = False
        if config.has_projection_heads:
            make_head = (nn.Identity if config.projection_dim == config.hidden_size
                         else lambda: nn.Linear(config.hidden_size, config.projection_dim))
            self.projection_heads = nn.ModuleList(make_head() for _ in range(config.num_hidden_layers))
        else:
            self.projection_heads = None
        self.post_init()

    def freeze_feature_encoder(self) -> None:
        self.feature_extractor._freeze_parameters()

    def _check_inputs(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> int | None:
        """Clear errors for the mistakes users make with raw audio: its type, shapes and dtype on every
        forward, its values (right padding, length, finiteness) where `_checks_input_values`. Returns the
        shortest item's real samples where the values were checked, else None."""
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}; "
                            "use a feature extractor with return_tensors='pt'.")
        if input_values.dim() != 2:
            hint = ("add a batch dimension: input_values[None]" if input_values.dim() == 1
                    else "squeeze the channel dimension (mono audio is expected)")
            raise ValueError(f"input_values must have shape (batch, samples), got {tuple(input_values.shape)}; {hint}.")
        if not input_values.is_floating_point():
            hint = (": scale integer PCM to [-1, 1], e.g. input_values.float() / 32768 for int16"
                    if not input_values.dtype == torch.bool else "")
            raise ValueError(f"input_values must be floating point audio, got dtype {input_values.dtype}{hint}.")
        if not _is_tracing() and input_values.shape[0] == 0:  # traced, the comparison would become a guard
            raise ValueError("input_values holds no utterance (batch size 0); give at least one.")
        if attention_mask is not None and not isinstance(attention_mask, torch.Tensor):
            raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}; use a "
                            "feature extractor with return_tensors='pt'.")
        if attention_mask is not None and attention_mask.shape != input_values.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_values has "
                             f"{tuple(input_values.shape)}; it must be a (batch, samples) 1/0 mask of the same shape.")
        return self._check_input_values(input_values, attention_mask) if self._checks_input_values() else None

    def _checks_input_values(self) -> bool:
        """Whether this forward checks the audio's values. The checks read their results back from the
        device, a host-device synchronisation that, on a GPU, stalls the queue of kernels launched ahead;
        and tracing cannot follow them. So they run on eager inference only: training batches come from
        the data path, which drops NaN/inf and too-short audio as it decodes and pads on the right."""
        return not (self.training or self.feeds_training_model or _is_tracing())

    def _check_input_values(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> int:
        """The value checks, computed on the device and read back together (one synchronisation on a GPU);
        returns the shortest item's real samples."""
        finite = torch.isfinite(input_values).all()
        if attention_mask is None:
            left_padded, shortest, finite = False, input_values.shape[-1], bool(finite)
        else:
            # The lengths are taken as the number of ones, so real samples must come first in every row.
            # A 0 followed by a 1 is left padding (or a hole), which would silently give wrong outputs.
            mask = attention_mask.long()
            not_right_padded = (mask[:, 1:] > mask[:, :-1]).any(-1)  # (B,)
            left_padded, shortest, finite = torch.stack(
                [not_right_padded.any().long(), mask.sum(-1).min(), finite.long()]).tolist()
        if left_padded:
            rows = not_right_padded.nonzero().flatten().tolist()
            raise ValueError(f"attention_mask row(s) {rows} have padding (0) before real samples (1); the model "
                             "expects right padding: each row's real samples first, then zeros. Pad on the right "
                             "(the feature extractor's default, padding_side='right').")
        field = self.config.receptive_field
        if shortest < field:
            raise ValueError(f"Audio of {shortest} samples is shorter than the model's receptive field ({field} "
                             f"samples = {field / 16000 * 1000:.0f} ms at 16 kHz); pad or drop such inputs.")
        if not finite:
            raise ValueError("input_values contains NaN or inf; check the audio decoding and normalisation.")
        return shortest

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mask_time_indices: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> ArmHubertModelOutput | tuple:
        r"""
        Args:
            input_values: (B, S) float waveform at 16 kHz, not normalised. Any floating dtype is cast to the
                model's dtype (e.g. float64 from `soundfile.read` runs as float32 in a float32 model).
            attention_mask: (B, S), 1 = real sample, 0 = padding. Needed for padded batches. Padding must be
                on the right (each row: its real samples, then zeros); a row with zeros before ones is refused.
                A mask of ones only is dropped on eager inference (the unpadded path is faster, same outputs).
            mask_time_indices: (B, T) bool; the mask embedding is written over these frames.
            output_hidden_states: also return every layer's output and the projected states.
            output_attentions: also return each layer's attention weights.
            input_lengths: B host ints (a list or a CPU tensor), the real samples of each item (the row sums
                of `attention_mask`), as the collators give them. SpecAugment's time masking, drawn on the host
                over each item's real frames, then reads nothing back from the device; without them it reads
                `attention_mask` back (the same mask either way).
        """
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        shortest = self._check_inputs(input_values, attention_mask)
        if attention_mask is not None and shortest == input_values.shape[-1]:
            # Nothing is padded (a feature extractor's mask for one utterance or equal lengths; the check
            # found the rows right-padded, and the shortest is full): the unmasked path gives the same
            # outputs 9-14 % sooner on a CPU (1 x 10 s). Known only where the values are checked; a traced or
            # training forward keeps the mask.
            attention_mask = None
        # The convs need the weights' dtype; audio readers often give float64.
        input_values = input_values.to(self.dtype)

        first_layer_lengths, key_mask = None, None
        if attention_mask is not None:
            sample_lengths = attention_mask.sum(-1).long()
            first_layer_lengths = torch.div(sample_lengths - self.config.conv_kernel[0], self.config.conv_stride[0],
                                            rounding_mode="floor") + 1
        extract_features = self.feature_extractor(input_values, first_layer_lengths).transpose(1, 2)
        if attention_mask is not None:
            key_mask = self._get_feature_vector_attention_mask(extract_features.shape[1], attention_mask)

        hidden_states = self.feature_projection(extract_features)
        hidden_states = self._mask_hidden_states(hidden_states, mask_time_indices, key_mask, input_lengths)

        last_hidden_state, hidden_states, attentions, for_heads = self.encoder(
            hidden_states, key_mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states)

        projected = None
        if output_hidden_states and self.projection_heads is not None:
            projected = tuple(head(state) for head, state in zip(self.projection_heads, for_heads))
        output = ArmHubertModelOutput(
            last_hidden_state=last_hidden_state,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            projected_hidden_states=projected,
            extract_features=extract_features,
        )
        return output if return_dict else output.to_tuple()

    def _mask_hidden_states(
        self, hidden_states: torch.Tensor, mask_time_indices: torch.Tensor | None, key_mask: torch.Tensor | None,
        input_lengths: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Write the mask embedding over `mask_time_indices`, or apply SpecAugment when training.

        SpecAugment's masks are drawn on the host and copied to the device without waiting for it; with
        `input_lengths` (B host ints) the real frames they are drawn over are known on the host as well."""
        batch, frames, hidden = hidden_states.shape
        if self.masked_spec_embed is None:
            if mask_time_indices is not None:
                raise ValueError("This model has no mask embedding (a task model without SpecAugment time masking); "
                                 "mask_time_indices cannot be applied.")
            if not (self.training and self.config.apply_spec_augment and self.config.mask_feature_prob > 0):
                return hidden_states
        elif mask_time_indices is not None:
            if mask_time_indices.shape != (batch, frames):
                raise ValueError(f"mask_time_indices must have shape (batch, frames) = {(batch, frames)}, got "
                                 f"{tuple(mask_time_indices.shape)}; compute frames with "
                                 "model._get_feat_extract_output_lengths(num_samples).")
            return torch.where(mask_time_indices[..., None].bool(), self.masked_spec_embed.to(hidden_states.dtype),
                               hidden_states)
        if not (self.training and self.config.apply_spec_augment):
            return hidden_states
        if self.config.mask_time_prob > 0 and self.masked_spec_embed is not None:
            if key_mask is not None and input_lengths is not None:  # the same (B, T) mask, built on the host
                frame_lengths = self._get_feat_extract_output_lengths(torch.as_tensor(input_lengths, device="cpu"))
                key_mask = torch.arange(frames)[None, :] < frame_lengths[:, None]
            time_mask = compute_span_mask((batch, frames), self.config.mask_time_prob, self.config.mask_time_length,
                                          attention_mask=key_mask, length_distribution="static",
                                          min_masks=self.config.mask_time_min_masks, no_overlap=False)
            time_mask = time_mask.to(hidden_states.device, non_blocking=True)
            hidden_states = torch.where(time_mask[..., None], self.masked_spec_embed.to(hidden_states.dtype),
                                        hidden_states)
        if self.config.mask_feature_prob > 0:
            feature_mask = compute_span_mask((batch, hidden), self.config.mask_feature_prob,
                                             self.config.mask_feature_length, length_distribution="static",
                                             min_masks=self.config.mask_feature_min_masks, no_overlap=False)
            feature_mask = feature_mask.to(hidden_states.device, non_blocking=True)
            hidden_states = hidden_states.masked_fill(feature_mask[:, None, :], 0.0)
        return hidden_states


# Weights of a distilled student that a task model leaves out when it does not use them: the distillation
# heads, and the mask embedding of a student that is fine-tuned without time masking. A task model loads
# a student's checkpoint, so these are expected there, not reported as unexpected.
_STUDENT_ONLY_KEYS = [r"projection_heads\.", r"masked_spec_embed"]


def _without_unused_heads(config: ArmHubertConfig, model_name: str, uses_heads: bool) -> ArmHubertConfig:
    """`config`, or a copy with `projection_dim=0` (and one log line) for a task model that does not use the
    student's distillation heads.

    Parameters that never get a gradient would make DistributedDataParallel fail (without
    find_unused_parameters) and only cost memory. The task scripts build their configs without unused
    heads; this covers a student's config given as it is, e.g. `AutoModelForCTC.from_pretrained(student)`.
    """
    if uses_heads or not config.has_projection_heads:
        return config
    logger.warning(f"{model_name} does not use the distillation heads (projection_dim={config.projection_dim}): "
                   "left out of the model (and their weights ignored when loading a student); its config gets "
                   "projection_dim=0.")
    config = copy.deepcopy(config)  # the caller's config, often the student's, stays as it is
    config.projection_dim = 0
    return config


class ArmHubertForCTC(ArmHubertPreTrainedModel):
    """ArmHubert with a linear CTC head on the last hidden state, like `HubertForCTC`."""

    _keys_to_ignore_on_load_unexpected = _STUDENT_ONLY_KEYS

    def __init__(self, config: ArmHubertConfig):
        if config.vocab_size is None or config.vocab_size < 1:
            raise ValueError("ArmHubertForCTC needs config.vocab_size (the CTC vocabulary size, blank included); "
                             "pass vocab_size=len(tokenizer) to from_pretrained.")
        config = _without_unused_heads(config, type(self).__name__, uses_heads=False)
        super().__init__(config)
        # The mask embedding is used only by SpecAugment's time masking.
        self.armhubert = ArmHubertModel(config, use_mask_embedding=config.spec_augment_masks_time)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the conv feature encoder (standard for CTC fine-tuning)."""
        self.armhubert.freeze_feature_encoder()

    def freeze_base_model(self) -> None:
        """Train only the CTC head."""
        for param in self.armhubert.parameters():
            param.requires_grad = False

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        label_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> CausalLMOutput | tuple:
        r"""
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample, right-padded (see
                [`ArmHubertModel.forward`]: any float dtype is cast, left padding is refused).
            labels: (B, L) token ids, padded with -100; the CTC blank is `config.pad_token_id`.
            input_lengths: B host ints (a list or a CPU tensor), the real samples of each item (the row sums
                of `attention_mask`); label_lengths: B host ints, the labels of each row of `labels`. The
                collators give both. SpecAugment's draws and the CTC loss need these counts on the host;
                given, nothing is read back from the device. Without them they are read back from
                `attention_mask` and `labels`, with the same results.

        Returns:
            `CausalLMOutput` with `logits` (B, T, vocab_size) and the CTC `loss` when labels are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.armhubert(input_values, attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                                 output_attentions=output_attentions, return_dict=True, input_lengths=input_lengths)
        logits = self.lm_head(self.dropout(outputs.last_hidden_state))

        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_values, dtype=torch.long)
            loss = self.ctc_loss(logits, labels, attention_mask, input_lengths=input_lengths,
                                 label_lengths=label_lengths)

        output = CausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()


class ArmHubertSuperbFeaturizer(nn.Module):
    """SUPERB's featurizer: a learned softmax-weighted sum of a frozen student's N feature sequences.

    The N features are the L distillation-head outputs (`config.superb_features="projected"`, the
    features the authors evaluated) or the encoder input plus the L layer outputs (`"hidden_states"`,
    what SUPERB takes from HuBERT). The weights start equal (zeros before the softmax), as in SUPERB.
    """

    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.projected = config.superb_features == "projected"
        num_features = config.num_hidden_layers + (0 if self.projected else 1)
        self.feature_dim = config.projection_dim if self.projected else config.hidden_size
        self.layer_weights = nn.Parameter(torch.zeros(num_features))

    def forward(self, outputs: ArmHubertModelOutput) -> torch.Tensor:
        """(B, T, feature_dim): the weighted sum of the features in `outputs` (run with output_hidden_states)."""
        features = torch.stack(outputs.projected_hidden_states if self.projected else outputs.hidden_states)
        weights = torch.softmax(self.layer_weights, dim=0).to(features.dtype)  # (N,)
        return (weights[:, None, None, None] * features).sum(0)

    @property
    def layer_weight_distribution(self) -> torch.Tensor:
        """softmax(layer_weights) (N,): how much each feature sequence contributes, for inspection."""
        return torch.softmax(self.layer_weights.detach(), dim=0)


class SuperbSpecAugment(nn.Module):
    """SpecAugment as SUPERB applies it to the weighted-sum features of a downstream model, in training only.

    Each utterance is augmented on its own frames, in this order (s3prl's `downstream/specaug.py`):

    1. time warp (`superb_time_warp_window` = W > 0, utterances of more than 2W frames): a point
       `c` drawn from [W, T - W) moves to `w` drawn from [c - W + 1, c + W]; frames [0, c) are
       resized to w frames and [c, T) to T - w frames by bicubic interpolation along time;
    2. `superb_num_freq_masks` bands of channels, each 0 .. `superb_freq_mask_width_limit` - 1 wide,
       set to 0;
    3. `superb_num_time_masks` bands of frames, each 0 .. `superb_time_mask_width_limit` - 1 wide,
       set to 0.

    A band's start is drawn from [0, max(1, size - the utterance's widest band of that kind)), as s3prl
    does, but per utterance over its own frames, so that bands fall on real frames only. Padded frames pass unchanged,
    which keeps every utterance's augmentation independent of its batch-mates' padding. The random
    numbers come from torch's default CPU generator, utterance after utterance: a seeded run repeats
    exactly, on any device. The lengths are host ints and the masks are copied to the device without
    waiting for it, so on a GPU the augmentation never stalls the host. In eval mode the features pass
    unchanged.
    """

    def __init__(self, config: ArmHubertConfig):
        super().__init__()
        self.time_warp_window = config.superb_time_warp_window
        self.num_freq_masks = config.superb_num_freq_masks
        self.freq_mask_width_limit = config.superb_freq_mask_width_limit
        self.num_time_masks = config.superb_num_time_masks
        self.time_mask_width_limit = config.superb_time_mask_width_limit

    def extra_repr(self) -> str:
        return (f"time_warp_window={self.time_warp_window}, freq_masks={self.num_freq_masks} x [0, "
                f"{self.freq_mask_width_limit}), time_masks={self.num_time_masks} x [0, {self.time_mask_width_limit})")

    def forward(self, features: torch.Tensor, frame_lengths: Sequence[int]) -> torch.Tensor:
        """`features` (B, T, D) with `frame_lengths` B real frames each -> augmented features (B, T, D).

        `frame_lengths` are host ints (a list or a CPU tensor): the draws depend on them. Lengths on a GPU
        are copied back first, a host-device synchronisation.
        """
        if not self.training:
            return features
        _, frames, channels = features.shape
        lengths = torch.as_tensor(frame_lengths, dtype=torch.long).cpu()  # (B,)
        warped, freq_bands, time_bands = [], [], []
        for item, length in zip(features, lengths.tolist()):
            warped.append(torch.cat([self._time_warp(item[:length]), item[length:]]))
            freq_bands.append(self._bands(channels, channels, self.num_freq_masks, self.freq_mask_width_limit))
            time_bands.append(self._bands(length, frames, self.num_time_masks, self.time_mask_width_limit))
        real_frames = torch.arange(frames)[None, :] < lengths[:, None]  # (B, T)
        # (B, T, D): a channel band covers the utterance's real frames; a frame band every channel.
        zeroed = (torch.stack(freq_bands)[:, None, :] & real_frames[:, :, None]) | torch.stack(time_bands)[:, :, None]
        return torch.stack(warped).masked_fill(zeroed.to(features.device, non_blocking=True), 0.0)

    def _time_warp(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, D) real frames of one utterance -> (T, D), warped in time."""
        window, length = self.time_warp_window, frames.shape[0]
        if window == 0 or length <= 2 * window:
            return frames
        center = int(torch.randint(window, length - window, ()))
        moved_to = int(torch.randint(center - window, center + window, ())) + 1
        # Bicubic over (time, channels) with the channel count unchanged interpolates along time only.
        image = frames[None, None]  # (1, 1, T, D)
        left = F.interpolate(image[:, :, :center], size=(moved_to, frames.shape[1]), mode="bicubic",
                             align_corners=False)
        right = F.interpolate(image[:, :, center:], size=(length - moved_to, frames.shape[1]), mode="bicubic",
                              align_corners=False)
        return torch.cat([left, right], dim=2)[0, 0]

    @staticmethod
    def _bands(size: int, padded_size: int, count: int, width_limit: int) -> torch.Tensor:
        """(padded_size,) bool: `count` random bands of widths 0 .. width_limit - 1 within the first `size` places."""
        bands = torch.zeros(padded_size, dtype=torch.bool)
        if count == 0:
            return bands
        widths = torch.randint(0, width_limit, (count,))
        starts = torch.randint(0, max(1, size - int(widths.max())), (count,))
        places = torch.arange(size)
        bands[:size] = ((places >= starts[:, None]) & (places < (starts + widths)[:, None])).any(0)
        return bands


def _lstm_over_real_frames(lstm: nn.LSTM, hidden_states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`lstm` (batch_first) over the first `lengths[b]` frames of each item: (B, T, D) -> (B, T, H), zeros
    past each item's end, so that padding cannot change any output.

    `lengths` (B,) int64 is on the CPU, where packing needs it. The items are sorted by length on the host
    and the orders moved to the device without waiting for it: `pack_padded_sequence(enforce_sorted=False)`
    and `pad_packed_sequence` would copy the order to the device and its inverse back, each a host-device
    synchronisation on a GPU. The same sort, so the same outputs.
    """
    sorted_lengths, order = torch.sort(lengths, descending=True)  # as pack_padded_sequence sorts
    restore = torch.argsort(order)  # the inverse permutation
    device = hidden_states.device
    packed = pack_padded_sequence(hidden_states.index_select(0, order.to(device, non_blocking=True)), sorted_lengths,
                                  batch_first=True)
    output, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=hidden_states.shape[1])
    return output.index_select(0, restore.to(device, non_blocking=True))


class _FrozenStudentMixin:
    """SUPERB's frozen student, shared by the SUPERB task models: `freeze_base_model` and a `train` that
    keeps the student in eval mode (no dropout, no masking), so that its outputs are fixed features.
    A model whose `student_is_frozen` is False trains its student as usual."""

    armhubert: ArmHubertModel

    @property
    def student_is_frozen(self) -> bool:
        return True

    def freeze_base_model(self) -> None:
        """Mark the student's parameters as not trainable, so that optimisers leave them out. Call this
        after `from_pretrained`, which marks loaded weights trainable."""
        for param in self.armhubert.parameters():
            param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.armhubert.feeds_training_model = mode
        if self.student_is_frozen:
            self.armhubert.eval()  # deterministic features: no dropout or masking inside the frozen student
        return self


class ArmHubertForSuperbCTC(_FrozenStudentMixin, ArmHubertPreTrainedModel):
    """SUPERB's ASR downstream model on a frozen student.

        student (frozen, eval mode) -> N feature sequences (B, T, D) -> softmax(layer_weights)-weighted sum
          [-> SpecAugment, training only] -> Linear(D, superb_projection_dim)
          -> superb_lstm_layers x { BiLSTM -> dropout } -> Linear -> logits

    With `superb_lstm_layers=0` the output layer reads the projection directly: SUPERB's phoneme
    recognition head, Linear(D, 256) -> Linear(256, vocab).

    The N features are the L distillation-head outputs (`superb_features="projected"`, the features
    the authors evaluated) or the encoder input plus the L layer outputs (`"hidden_states"`). Only
    the layer weights, the projection, the BiLSTM and the output layer are trained: the student runs
    without autograd, so it never receives gradients, and it stays in eval mode (no dropout, none of
    its own masking) even while the model trains, so its outputs are fixed features as in SUPERB.
    With `superb_spec_augment`, SUPERB's SpecAugment ([`SuperbSpecAugment`]) changes the weighted sum
    while training, as SUPERB's ASR and slot-filling recipes do.
    """

    _keys_to_ignore_on_load_unexpected = _STUDENT_ONLY_KEYS

    def __init__(self, config: ArmHubertConfig):
        if config.vocab_size is None or config.vocab_size < 1:
            raise ValueError("ArmHubertForSuperbCTC needs config.vocab_size (the CTC vocabulary size, blank "
                             "included); pass vocab_size=len(tokenizer) to from_pretrained.")
        if config.superb_features == "projected" and not config.has_projection_heads:
            raise ValueError("superb_features='projected' needs the student's distillation heads (projection_dim); "
                             "this student has none: use superb_features='hidden_states'.")
        # The frozen student keeps all its weights (its mask embedding too, never trained here, so no
        # trainable parameter goes unused) except the heads when the features are not the projected ones.
        config = _without_unused_heads(config, type(self).__name__, uses_heads=config.superb_features == "projected")
        super().__init__(config)
        # Transformers picks the loss from the class name, which "ForSuperbCTC" does not match.
        self.loss_type = "ForCTC"
        self.armhubert = ArmHubertModel(config)
        self.featurizer = ArmHubertSuperbFeaturizer(config)
        self.spec_augment = SuperbSpecAugment(config) if config.superb_spec_augment else None
        self.projector = nn.Linear(self.featurizer.feature_dim, config.superb_projection_dim)
        # One single-layer LSTM per layer, so that dropout also follows the last one (as in SUPERB).
        width = config.superb_lstm_hidden_size
        layers = config.superb_lstm_layers
        inputs = [config.superb_projection_dim, *[2 * width] * (layers - 1)][:layers]  # none for 0 layers
        self.lstm_layers = nn.ModuleList(nn.LSTM(size, width, batch_first=True, bidirectional=True) for size in inputs)
        self.dropout = nn.Dropout(config.superb_lstm_dropout)
        head_input = 2 * width if config.superb_lstm_layers else config.superb_projection_dim
        self.lm_head = nn.Linear(head_input, config.vocab_size)
        self.post_init()
        self.freeze_base_model()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        label_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> CausalLMOutput | tuple:
        r"""
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample, right-padded (see
                [`ArmHubertModel.forward`]: any float dtype is cast, left padding is refused).
            labels: (B, L) token ids, padded with -100; the CTC blank is `config.pad_token_id`.
            input_lengths: B host ints (a list or a CPU tensor), the real samples of each item (the row sums
                of `attention_mask`); label_lengths: B host ints, the labels of each row of `labels`. The
                collators give both. The LSTM's packing, SpecAugment's draws and the CTC loss need these
                counts on the host; given, nothing is read back from the device. Without them they are read
                back from `attention_mask` and `labels`, with the same results.

        Returns:
            `CausalLMOutput` with `logits` (B, T, vocab_size) and the CTC `loss` when labels are given;
            `hidden_states` are the student's (encoder input + layers) when asked for.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        # The student is never trained here, whatever its requires_grad flags say (`from_pretrained` sets
        # them again): no autograd graph through it, which also saves the memory of its activations.
        with torch.no_grad():
            outputs = self.armhubert(input_values, attention_mask=attention_mask, output_hidden_states=True,
                                     output_attentions=output_attentions, return_dict=True)
        lengths = self._get_feat_extract_output_lengths(self._host_sample_lengths(attention_mask, input_lengths))
        features = self.featurizer(outputs)
        if self.spec_augment is not None:  # changes nothing in eval mode
            features = self.spec_augment(features, lengths)
        hidden_states = self.projector(features)
        for lstm in self.lstm_layers:
            hidden_states = self.dropout(_lstm_over_real_frames(lstm, hidden_states, lengths))
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.ctc_loss(logits, labels, attention_mask, input_lengths=input_lengths,
                                 label_lengths=label_lengths)
        output = CausalLMOutput(loss=loss, logits=logits,
                                hidden_states=outputs.hidden_states if output_hidden_states else None,
                                attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()

    @property
    def layer_weight_distribution(self) -> torch.Tensor:
        """softmax(layer_weights): how much each feature sequence contributes (N,), for inspection."""
        return self.featurizer.layer_weight_distribution


class ArmHubertForSequenceClassification(_FrozenStudentMixin, ArmHubertPreTrainedModel):
    """An utterance classifier on a student, like `HubertForSequenceClassification`, in two modes.

        features (B, T, D) -> Linear(D, classifier_proj_size) per frame -> mean over the real frames
          -> Linear(classifier_proj_size, num_labels) -> logits (B, num_labels)

    `classifier_mode="superb"`: SUPERB's utterance-level protocol (keyword spotting, intent
    classification, speaker identification, emotion recognition). The features are a learned
    softmax-weighted sum of the frozen student's `superb_features` (as in [`ArmHubertForSuperbCTC`]);
    only the layer weights, the projector and the classifier are trained, and the student stays in
    eval mode. `"fine_tune"`: the whole student is trained (SpecAugment as configured); the features
    are its last layer, or a weighted sum of its layers with `use_weighted_layer_sum`.

    With `classifier_slot_sizes` the logits are consecutive blocks, one single-label decision per
    slot (SUPERB's intent classification: action, object, location from one Linear): the loss is the
    sum of the slots' cross-entropies, and an utterance is right only when every slot is.
    """

    _keys_to_ignore_on_load_unexpected = _STUDENT_ONLY_KEYS

    def __init__(self, config: ArmHubertConfig):
        superb = config.classifier_mode == "superb"
        uses_featurizer = superb or config.use_weighted_layer_sum
        projected = uses_featurizer and config.superb_features == "projected"
        if projected and not config.has_projection_heads:
            raise ValueError("superb_features='projected' needs the student's distillation heads (projection_dim); "
                             "this student has none: use superb_features='hidden_states'.")
        config = _without_unused_heads(config, type(self).__name__, uses_heads=projected)
        super().__init__(config)
        # A frozen student keeps all its weights (none is trained); a fine-tuned one only those it uses.
        self.armhubert = ArmHubertModel(config, use_mask_embedding=superb or config.spec_augment_masks_time)
        self.featurizer = ArmHubertSuperbFeaturizer(config) if uses_featurizer else None
        feature_dim = self.featurizer.feature_dim if uses_featurizer else config.hidden_size
        self.projector = nn.Linear(feature_dim, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()
        if superb:
            self.freeze_base_model()

    @property
    def student_is_frozen(self) -> bool:
        return self.config.classifier_mode == "superb"

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the conv feature encoder (`"fine_tune"`)."""
        self.armhubert.freeze_feature_encoder()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample, right-padded (see
                [`ArmHubertModel.forward`]: any float dtype is cast, left padding is refused).
            labels: (B,) class ids, or (B, number of slots) value ids within each slot with
                `classifier_slot_sizes`.
            input_lengths: B host ints, the real samples of each item, as the collators give them: the
                student's SpecAugment (`"fine_tune"`) then reads nothing back from the device (see
                [`ArmHubertModel.forward`]).

        Returns:
            `SequenceClassifierOutput` with `logits` (B, num_labels) and the cross-entropy `loss` (summed
            over the slots) when labels are given; `hidden_states` are the student's when asked for.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        # A frozen student runs without autograd (it is never trained, whatever its requires_grad flags say).
        with torch.no_grad() if self.student_is_frozen else contextlib.nullcontext():
            outputs = self.armhubert(input_values, attention_mask=attention_mask,
                                     output_hidden_states=output_hidden_states or self.featurizer is not None,
                                     output_attentions=output_attentions, return_dict=True, input_lengths=input_lengths)
        features = self.featurizer(outputs) if self.featurizer is not None else outputs.last_hidden_state
        frames = self.projector(features)  # (B, T, classifier_proj_size)
        real = self._get_feature_vector_attention_mask(frames.shape[1], attention_mask)  # (B, T)
        pooled = (frames * real[..., None]).sum(1) / real.sum(1, keepdim=True).to(frames.dtype)
        logits = self.classifier(pooled)

        loss = self.classification_loss(logits, labels) if labels is not None else None
        output = SequenceClassifierOutput(loss=loss, logits=logits,
                                          hidden_states=outputs.hidden_states if output_hidden_states else None,
                                          attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of `logits` (B, num_labels) against `labels` (B,) or (B, slots), summed over slots
        (each slot's loss a mean over the batch). The labels' range is checked on eager inference (in
        training the collator encodes them from the task's label set)."""
        slots = self.config.slot_slices
        labels = labels.reshape(len(logits), len(slots))
        if self._checks_input_values() and labels.numel():
            for i, (name, block) in enumerate(slots):
                size = block.stop - block.start
                if labels[:, i].min() < 0 or labels[:, i].max() >= size:
                    raise ValueError(f"Labels of slot {name!r} must be in [0, {size}), got {labels[:, i].tolist()}.")
        return sum(F.cross_entropy(logits[:, block].float(), labels[:, i]) for i, (_, block) in enumerate(slots))

    def predict_slots(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, slots) the best value of each slot, as an index within the slot (one column without slots)."""
        return torch.stack([logits[:, block].argmax(-1) for _, block in self.config.slot_slices], dim=-1)

    @property
    def layer_weight_distribution(self) -> torch.Tensor | None:
        """softmax(layer_weights) (N,) of the weighted layer sum, for inspection; None without one."""
        return self.featurizer.layer_weight_distribution if self.featurizer is not None else None


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax (SUPERB's speaker verification objective): cross-entropy of
    scale * (cos(x, w_j) - margin * [j = label]) over the speakers j, x and the columns w_j of `weight`
    (input_dim, num_labels) L2-normalised."""

    def __init__(self, input_dim: int, num_labels: int, scale: float, margin: float):
        super().__init__()
        self.scale, self.margin = scale, margin
        self.weight = nn.Parameter(torch.empty(input_dim, num_labels))

    def forward(self, hidden_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`hidden_states` (B, input_dim), `labels` (B,) -> the mean loss over the batch."""
        cosines = F.normalize(hidden_states.float(), dim=-1) @ F.normalize(self.weight.float(), dim=0)  # (B, N)
        margins = self.margin * F.one_hot(labels, cosines.shape[-1]).to(cosines.dtype)
        return F.cross_entropy(self.scale * (cosines - margins), labels)


class TdnnLayer(nn.Module):
    """A time-delay layer as SUPERB's (and Transformers') x-vector: each output frame is ReLU(Linear) of
    `kernel_size` input frames `dilation` apart, laid out frame after frame; (B, T, in) -> (B, T - dilation *
    (kernel_size - 1), out)."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.kernel = nn.Linear(in_dim * kernel_size, out_dim)

    @property
    def frames_lost(self) -> int:
        return self.dilation * (self.kernel_size - 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out_dim, in_dim = self.kernel.out_features, hidden_states.shape[-1]
        weight = self.kernel.weight.view(out_dim, self.kernel_size, in_dim).transpose(1, 2)  # (out, in, k)
        convolved = F.conv1d(hidden_states.transpose(1, 2), weight, self.kernel.bias, dilation=self.dilation)
        return F.relu(convolved.transpose(1, 2))


class ArmHubertForXVector(_FrozenStudentMixin, ArmHubertPreTrainedModel):
    """SUPERB's speaker verification model (s3prl's `sv_voxceleb1`, AM-softmax recipe) on a frozen student.

        student (frozen, eval mode) -> softmax(layer_weights)-weighted sum of its `superb_features` (B, T, D)
          -> Linear(D, tdnn_dim[0]) -> 5 x TDNN (+ ReLU) -> mean || std over each item's real frames (B, 2 x 1500)
          -> ReLU(Linear(., xvector_output_dim)) = `embeddings` -> ReLU(Linear) = `logits` -> AM-softmax loss

    Trials are scored by the cosine of two `embeddings` (`verification_score`), as SUPERB scores them.
    Unlike Transformers' `WavLMForXVector`, whose two utterance-level Linears have no activation, both are
    followed by a ReLU, as in SUPERB; the standard deviation is taken over each item's real frames (SUPERB
    counts one padded frame more in a padded training batch), so that every item of a padded batch gets the
    output it gets alone. `num_labels` is the number of training speakers.
    """

    _keys_to_ignore_on_load_unexpected = _STUDENT_ONLY_KEYS

    def __init__(self, config: ArmHubertConfig):
        if config.superb_features == "projected" and not config.has_projection_heads:
            raise ValueError("superb_features='projected' needs the student's distillation heads (projection_dim); "
                             "this student has none: use superb_features='hidden_states'.")
        config = _without_unused_heads(config, type(self).__name__, uses_heads=config.superb_features == "projected")
        super().__init__(config)
        self.armhubert = ArmHubertModel(config)
        self.featurizer = ArmHubertSuperbFeaturizer(config)
        self.projector = nn.Linear(self.featurizer.feature_dim, config.tdnn_dim[0])
        widths = [config.tdnn_dim[0], *config.tdnn_dim]
        self.tdnn = nn.ModuleList(TdnnLayer(widths[i], widths[i + 1], kernel, dilation)
                                  for i, (kernel, dilation) in enumerate(zip(config.tdnn_kernel, config.tdnn_dilation)))
        self.feature_extractor = nn.Linear(2 * config.tdnn_dim[-1], config.xvector_output_dim)
        self.classifier = nn.Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels, config.am_softmax_scale,
                                       config.am_softmax_margin)
        for linear in (self.projector, *(layer.kernel for layer in self.tdnn), self.feature_extractor, self.classifier):
            linear.keeps_torch_init = True
        self.post_init()
        self.freeze_base_model()

    @property
    def frames_lost(self) -> int:
        """Frames the TDNN layers take off an utterance (14 for SUPERB's)."""
        return sum(layer.frames_lost for layer in self.tdnn)

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> XVectorOutput | tuple:
        r"""
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample, right-padded (see
                [`ArmHubertModel.forward`]). Every item needs at least `frames_lost` + 2 frames (0.32 s).
            labels: (B,) speaker ids in [0, num_labels).
            input_lengths: B host ints, the real samples of each item, as the collators give them: the length
                check then costs nothing. Without them it reads the lengths back from `attention_mask`, on eager
                inference only.

        Returns:
            `XVectorOutput` with `embeddings` (B, xvector_output_dim) (what trials are scored with), `logits`
            (B, xvector_output_dim) (the input of the AM-softmax) and the AM-softmax `loss` with labels.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        with torch.no_grad():
            outputs = self.armhubert(input_values, attention_mask=attention_mask, output_hidden_states=True,
                                     output_attentions=output_attentions, return_dict=True)
        if input_lengths is not None or self._checks_input_values():
            samples = self._host_sample_lengths(attention_mask, input_lengths)
            if int((self._get_feat_extract_output_lengths(samples) - self.frames_lost).min()) < 2:
                raise ValueError(f"An utterance of {int(samples.min())} samples is too short for the x-vector head: "
                                 f"it needs {self.frames_lost + 2} frames after the student's conv encoder for a "
                                 "standard deviation; leave such utterances out.")
        hidden_states = self.projector(self.featurizer(outputs))  # (B, T, tdnn_dim[0])
        for layer in self.tdnn:
            hidden_states = layer(hidden_states)  # (B, T', tdnn_dim[i])
        lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1).long()) - self.frames_lost  # (B,)
        real = (torch.arange(hidden_states.shape[1], device=lengths.device)[None, :] < lengths[:, None])
        real = real[..., None].to(hidden_states.dtype)  # (B, T', 1)
        count = lengths[:, None].to(hidden_states.dtype)
        mean = (hidden_states * real).sum(1) / count
        variance = ((hidden_states - mean[:, None]) ** 2 * real).sum(1) / (count - 1)  # unbiased, as torch.std
        # A channel a ReLU keeps at 0 has no variance: its std is 0 with a zero gradient (sqrt's is infinite there,
        # which would turn the whole step's gradients into NaN).
        constant = variance <= 0
        std = torch.where(constant, torch.zeros_like(variance), variance.masked_fill(constant, 1.0).sqrt())
        embeddings = F.relu(self.feature_extractor(torch.cat([mean, std], dim=-1)))
        logits = F.relu(self.classifier(embeddings))

        loss = self.objective(logits, labels) if labels is not None else None
        output = XVectorOutput(loss=loss, logits=logits, embeddings=embeddings,
                               hidden_states=outputs.hidden_states if output_hidden_states else None,
                               attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()

    @staticmethod
    def verification_score(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """SUPERB's trial score: the cosine of two (..., D) `embeddings`."""
        return F.cosine_similarity(F.normalize(first.float(), dim=-1), F.normalize(second.float(), dim=-1), dim=-1)

    @property
    def layer_weight_distribution(self) -> torch.Tensor:
        """softmax(layer_weights) (N,), for inspection."""
        return self.featurizer.layer_weight_distribution


# ----------------------------------------------------------------------------------------------
# SUPERB speaker diarization (docs/superb.md, SD)
# ----------------------------------------------------------------------------------------------


def permutation_invariant_bce(logits: torch.Tensor, labels: torch.Tensor,
                              frame_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SUPERB's permutation-invariant BCE of speaker activities.

    For every order of the speakers: BCE with logits per frame and speaker, the mean over speakers,
    the sum over each item's real frames; each item keeps its smallest sum, and the loss is the
    total over the batch divided by the total of real frames.

    Args:
        logits: (B, T, S) speaker-activity logits; labels: (B, T, S) 0/1 (anything beyond an item's
            frames is ignored); frame_lengths: (B,) real frames of each item.

    Returns:
        (loss, permutations (B, S)): the loss, and for each item the label column each output
        speaker was matched with (labels[..., permutations[b]] lines up with logits[b]).
    """
    batch, frames, speakers = logits.shape
    real = torch.arange(frames, device=logits.device)[None, :] < frame_lengths.to(logits.device)[:, None]  # (B, T)
    targets = labels.float().masked_fill(~real[..., None], 0.0)
    # (P, S), built on the host and copied without waiting for the device.
    orders = torch.tensor(list(itertools.permutations(range(speakers)))).to(logits.device, non_blocking=True)
    per_order = torch.stack([
        (F.binary_cross_entropy_with_logits(logits.float(), targets[..., order], reduction="none").mean(-1)
         * real).sum(-1)
        for order in orders])  # (P, B)
    best, chosen = per_order.min(0)
    return best.sum() / real.sum().clamp(min=1), orders[chosen]


class ArmHubertForSuperbDiarization(_FrozenStudentMixin, ArmHubertPreTrainedModel):
    """SUPERB's speaker diarization model on a frozen student (s3prl's `diarization` task).

        student (frozen, eval mode) -> N feature sequences -> softmax(layer_weights)-weighted sum (B, T', D)
          -> frames aligned to the label frames (the last feature frame repeated) (B, T, D)
          -> LSTM(D, diarization_lstm_hidden_size), one unidirectional layer -> Linear(., num_labels)
          -> logits (B, T, num_labels): one activity logit per speaker and frame

    `num_labels` is the number of speakers per recording (SUPERB's Libri2Mix: 2). A label frame is one
    stride of the conv encoder (320 samples, 20 ms), and an item of S samples has S // 320 of them:
    the conv encoder makes one frame fewer for most lengths, so the last feature frame is repeated, as
    s3prl pads its features to the labels. The loss is `permutation_invariant_bce` (the speakers of a
    recording have no order). Only the layer weights, the LSTM and the output layer are trained.
    """

    _keys_to_ignore_on_load_unexpected = _STUDENT_ONLY_KEYS

    def __init__(self, config: ArmHubertConfig):
        if config.superb_features == "projected" and not config.has_projection_heads:
            raise ValueError("superb_features='projected' needs the student's distillation heads (projection_dim); "
                             "this student has none: use superb_features='hidden_states'.")
        config = _without_unused_heads(config, type(self).__name__, uses_heads=config.superb_features == "projected")
        super().__init__(config)
        self.armhubert = ArmHubertModel(config)
        self.featurizer = ArmHubertSuperbFeaturizer(config)
        self.lstm = nn.LSTM(self.featurizer.feature_dim, config.diarization_lstm_hidden_size, batch_first=True)
        self.classifier = nn.Linear(config.diarization_lstm_hidden_size, config.num_labels)
        self.post_init()
        self.freeze_base_model()

    def label_frame_lengths(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) label frames of each item: its samples // the conv encoder's total stride."""
        return attention_mask.sum(-1).long() // self.config.total_stride

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        input_lengths: Sequence[int] | None = None,
        **kwargs,
    ) -> TokenClassifierOutput | tuple:
        r"""
        Args:
            input_values: (B, S) waveform; attention_mask: (B, S) 1 = real sample, right-padded.
            labels: (B, T, num_labels) 0/1 speaker activities, T = the longest item's S // total_stride;
                frames beyond an item's own count are ignored (pad them with any value).
            input_lengths: B host ints (a list or a CPU tensor), the real samples of each item (the row sums
                of `attention_mask`), as the collators give them. The LSTM's packing and the length check need
                them on the host; given, nothing is read back from the device. Without them they are read back
                from `attention_mask`, with the same results.

        Returns:
            `TokenClassifierOutput` with `logits` (B, T, num_labels) and the permutation-invariant BCE
            `loss` when labels are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if attention_mask is None:
            attention_mask = torch.ones_like(input_values, dtype=torch.long)
        samples = self._host_sample_lengths(attention_mask, input_lengths)  # (B,) on the host
        if int(self._get_feat_extract_output_lengths(samples).min()) < 1:
            raise ValueError(f"Every item needs at least {self.config.receptive_field} samples (one frame of the conv "
                             f"encoder); got {samples.tolist()}.")
        frame_lengths = self.label_frame_lengths(attention_mask)
        feature_lengths = self._get_feat_extract_output_lengths(attention_mask.sum(-1).long())
        with torch.no_grad():  # the student is never trained here
            outputs = self.armhubert(input_values, attention_mask=attention_mask, output_hidden_states=True,
                                     output_attentions=output_attentions, return_dict=True)
        features = self.featurizer(outputs)  # (B, T', D)
        host_frame_lengths = samples // self.config.total_stride  # label_frame_lengths, on the host
        frames = int(host_frame_lengths.max())
        # Label frame t reads feature frame min(t, last real feature frame).
        source = torch.minimum(torch.arange(frames, device=features.device)[None, :],
                               (feature_lengths.to(features.device) - 1)[:, None])  # (B, T)
        features = torch.gather(features, 1, source[..., None].expand(-1, -1, features.shape[-1]))
        hidden_states = _lstm_over_real_frames(self.lstm, features, host_frame_lengths.clamp(min=1))
        logits = self.classifier(hidden_states)

        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(f"labels must have the logits' shape (B, T, num_labels) = {tuple(logits.shape)}, "
                                 f"T the longest item's samples // {self.config.total_stride}; "
                                 f"got {tuple(labels.shape)}.")
            loss, _ = permutation_invariant_bce(logits, labels, frame_lengths)
        output = TokenClassifierOutput(loss=loss, logits=logits,
                                       hidden_states=outputs.hidden_states if output_hidden_states else None,
                                       attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()

    @property
    def layer_weight_distribution(self) -> torch.Tensor:
        """softmax(layer_weights): how much each feature sequence contributes (N,), for inspection."""
        return self.featurizer.layer_weight_distribution


# ----------------------------------------------------------------------------------------------
# Span masking (docs/method.md §3)
# ----------------------------------------------------------------------------------------------


LengthDistribution = Literal["uniform", "static"]
_LENGTH_DISTRIBUTIONS = ("uniform", "static")


def compute_span_mask(
    shape: Sequence[int],
    mask_prob: float,
    mask_length: int,
    *,
    attention_mask: torch.Tensor | None = None,
    length_distribution: LengthDistribution = "uniform",
    min_masks: int = 2,
    no_overlap: bool = True,
    min_space: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A (B, T) bool mask of spans of frames, True = masked: the span mask of masking distillation.

    It reproduces the span mask of the teacher's own pre-training code (fairseq's
    `compute_mask_indices` with `mask_other=0`, docs/method.md §3), so that the student is trained on
    masks with the statistics the teacher saw. For each row with `sz` real frames:

    1. `num_spans = max(min_masks, int(mask_prob * sz / mask_length + u))` with `u ~ U[0, 1)`.
    2. Span lengths are `mask_length` ("static") or integers drawn uniformly from
       [0, 2 * mask_length] ("uniform"). If every length is 0, the first becomes
       `min(mask_length, sz - 1)`.
    3. Without overlap (the recipes' setting) spans are placed longest first into a list of free
       intervals: an interval is chosen with probability proportional to its length among those that
       can hold the span plus `min_space`, the start is uniform inside it, and the leftovers on either
       side (minus `min_space`) are kept if they are not shorter than the shortest span. Placement
       stops at the first span that fits nowhere. With overlap allowed, distinct starts are drawn
       uniformly and spans may overlap; frames past the row's end are dropped.
    4. Every row then keeps the same number of masked frames: the batch minimum, chosen at random
       without replacement from its own masked frames.

    Reference statistics (docs/method.md §3): mask_prob 0.8, 100 frames, length 10, uniform lengths,
    batches of 8 -> mean masked fraction 0.540. Rows too short to hold a span get fewer spans or none,
    and since every row keeps the batch minimum, one such row lowers the count for the whole batch;
    nothing raises. All randomness comes from torch (`generator`), so masks are reproducible and a
    run resumes with the generator's state.

    Args:
        shape: (B, T).
        mask_prob: Expected share of frames covered by spans before the no-overlap and equal-count
            rules (which lower it), in [0, 1]. `min_masks` spans are drawn even when it is 0.
        mask_length: Mean span length (the exact length when "static").
        attention_mask: (B, T), 1/True = real frame. Only real frames are masked; spans are laid out
            over a row's real frames in order, so left or right padding both work.
        length_distribution: "uniform" or "static".
        min_masks: Minimum number of spans drawn per row.
        no_overlap: Place spans without overlap, `min_space` free frames apart (the recipes' setting).
        min_space: Free frames kept between spans when `no_overlap`.
        generator: CPU torch generator of every random draw.

    Returns:
        (B, T) bool tensor, on `attention_mask`'s device if given, else on the CPU.
    """
    batch, frames = _check_span_mask_args(shape, mask_prob, mask_length, attention_mask, length_distribution,
                                          min_masks, min_space, generator)
    if attention_mask is not None:
        real = attention_mask.detach().to("cpu", torch.bool)
    else:
        real = torch.ones(batch, frames, dtype=torch.bool)

    # Per row: positions (in the padded row) of its masked frames.
    per_row: list[torch.Tensor] = []
    for b in range(batch):
        real_positions = real[b].nonzero().squeeze(1)
        spans = _sample_row_spans(int(real_positions.numel()), mask_prob, mask_length, length_distribution,
                                  min_masks, no_overlap, min_space, generator)
        covered = _spans_to_indices(spans, int(real_positions.numel()))
        per_row.append(real_positions[covered])

    mask = torch.zeros(batch, frames, dtype=torch.bool)
    keep = min((len(idx) for idx in per_row), default=0)
    for b, idx in enumerate(per_row):
        if len(idx) > keep:
            # Equal count per row so the batch can be processed uniformly.
            idx = idx[torch.randperm(len(idx), generator=generator)[:keep]]
        mask[b, idx] = True

    if attention_mask is not None:
        mask = mask.to(attention_mask.device)
    return mask


def _check_span_mask_args(
    shape: Sequence[int],
    mask_prob: float,
    mask_length: int,
    attention_mask: torch.Tensor | None,
    length_distribution: str,
    min_masks: int,
    min_space: int,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """(B, T) from `shape`, after a clear error for any argument of `compute_span_mask` that is wrong."""
    try:
        batch, frames = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (batch, frames), two integers; got {shape!r}.") from None
    if batch < 0 or frames < 0:
        raise ValueError(f"shape must not be negative; got {tuple(shape)}.")
    if not 0.0 <= float(mask_prob) <= 1.0:
        raise ValueError(f"mask_prob must be in [0, 1]; got {mask_prob}. It is the share of frames to cover with "
                         "spans (0.8 or 0.4 in the recipes).")
    if isinstance(mask_length, bool) or int(mask_length) != mask_length or mask_length < 1:
        raise ValueError(f"mask_length must be an integer >= 1; got {mask_length!r} (the recipes use 10).")
    if length_distribution not in _LENGTH_DISTRIBUTIONS:
        raise ValueError(f"length_distribution must be one of {_LENGTH_DISTRIBUTIONS}; got {length_distribution!r}.")
    if int(min_masks) != min_masks or min_masks < 0:
        raise ValueError(f"min_masks must be an integer >= 0; got {min_masks!r}.")
    if int(min_space) != min_space or min_space < 0:
        raise ValueError(f"min_space must be an integer >= 0; got {min_space!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {type(generator).__name__}.")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("generator must be a CPU torch.Generator (masks are drawn on the CPU); got one on "
                         f"{generator.device}.")
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise ValueError("attention_mask must be a (batch, frames) tensor with 1/True for real frames; got "
                             f"{type(attention_mask).__name__}.")
        if tuple(attention_mask.shape) != (batch, frames):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but shape is {(batch, frames)}; "
                             "pass the frame-level mask (after the conv feature extractor), not the sample-level one.")
        if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0/1 (or bool) values.")
    return batch, frames


def _sample_row_spans(
    sz: int,
    mask_prob: float,
    mask_length: int,
    length_distribution: str,
    min_masks: int,
    no_overlap: bool,
    min_space: int,
    generator: torch.Generator | None,
) -> list[tuple[int, int]]:
    """Spans (start, length) of one row of `sz` real frames (steps 1 to 3 of `compute_span_mask`).

    Spans of length 0 may appear (uniform lengths start at 0); they cover nothing. Spans reach past
    `sz` only when overlap is allowed.
    """
    if sz <= 0:
        return []
    u = torch.rand((), generator=generator).item()
    num_spans = max(min_masks, int(mask_prob * sz / mask_length + u))
    if num_spans == 0:
        return []
    if length_distribution == "static":
        lengths = [mask_length] * num_spans
    else:
        lengths = torch.randint(0, 2 * mask_length + 1, (num_spans,), generator=generator).tolist()
    if sum(lengths) == 0:
        lengths[0] = min(mask_length, sz - 1)

    if no_overlap:
        return _place_without_overlap(sz, lengths, min_space, generator)
    return _place_with_overlap(sz, lengths, generator)


def _place_without_overlap(
    sz: int, lengths: list[int], min_space: int, generator: torch.Generator | None
) -> list[tuple[int, int]]:
    """Spans (start, length) placed longest first into free intervals of [0, sz), `min_space` apart."""
    # Two uniforms per span, drawn at once: one picks the interval, one the start.
    draws = torch.rand(2 * len(lengths), generator=generator).tolist()
    shortest = min(lengths)
    free = [(0, sz)]  # half-open intervals [s, e)
    spans: list[tuple[int, int]] = []
    for k, length in enumerate(sorted(lengths, reverse=True)):
        weights = [e - s if e - s >= length + min_space else 0 for s, e in free]
        total = sum(weights)
        if total == 0:
            break  # the reference stops at the first span that fits nowhere
        # Interval with probability proportional to its length.
        target = draws[2 * k] * total
        chosen = len(weights) - 1
        for i, w in enumerate(weights):
            if target < w:
                chosen = i
                break
            target -= w
        while weights[chosen] == 0:  # guard against float round-off at the end
            chosen -= 1
        s, e = free.pop(chosen)
        # Start uniform in [s, e - length); the exclusive end is the reference's, and it leaves one
        # frame free before the next part. (With min_space 0 the range can be empty; then start at s.)
        n_starts = max(e - length - s, 1)
        start = s + min(int(draws[2 * k + 1] * n_starts), n_starts - 1)
        spans.append((start, length))
        if start - s - min_space >= shortest:
            free.append((s, start - min_space + 1))
        if e - start - length - min_space > shortest:
            free.append((start + length + min_space, e))
    return spans


def _place_with_overlap(sz: int, lengths: list[int], generator: torch.Generator | None) -> list[tuple[int, int]]:
    """Spans (start, length) at distinct uniform starts; they may overlap and run past `sz`."""
    # As the reference: distinct starts in [0, sz - shortest), or, when that leaves no more starts than
    # spans, in [0, spans + 1); frames past the end are dropped later.
    n_starts = sz - min(lengths)
    if n_starts <= len(lengths):
        n_starts = len(lengths) + 1
    n_starts = max(n_starts, 1)
    count = min(len(lengths), n_starts)  # short rows: as many spans as there are starts
    starts = torch.randperm(n_starts, generator=generator)[:count].tolist()
    return list(zip(starts, lengths[:count]))


def _spans_to_indices(spans: list[tuple[int, int]], sz: int) -> torch.Tensor:
    """Sorted positions in [0, sz) that `spans` cover."""
    covered = torch.zeros(sz, dtype=torch.bool)
    for start, length in spans:
        covered[start:start + length] = True
    return covered.nonzero().squeeze(1)


# ----------------------------------------------------------------------------------------------
# Auto classes
# ----------------------------------------------------------------------------------------------


ArmHubertConfig.register_for_auto_class()
ArmHubertModel.register_for_auto_class("AutoModel")
ArmHubertForCTC.register_for_auto_class("AutoModelForCTC")
ArmHubertForSuperbCTC.register_for_auto_class("AutoModelForCTC")
AutoConfig.register("armhubert", ArmHubertConfig, exist_ok=True)
AutoModel.register(ArmHubertConfig, ArmHubertModel, exist_ok=True)
# Both heads share the config class: AutoModelForCTC picks the one named in config.architectures
# (ArmHubertForCTC for a plain student).
AutoModelForCTC.register(ArmHubertConfig, (ArmHubertForCTC, ArmHubertForSuperbCTC), exist_ok=True)
ArmHubertForSequenceClassification.register_for_auto_class("AutoModelForAudioClassification")
AutoModelForAudioClassification.register(ArmHubertConfig, ArmHubertForSequenceClassification, exist_ok=True)
ArmHubertForSuperbDiarization.register_for_auto_class("AutoModelForAudioFrameClassification")
AutoModelForAudioFrameClassification.register(ArmHubertConfig, ArmHubertForSuperbDiarization, exist_ok=True)
ArmHubertForXVector.register_for_auto_class("AutoModelForAudioXVector")
AutoModelForAudioXVector.register(ArmHubertConfig, ArmHubertForXVector, exist_ok=True)

__all__ = ["AMSoftmaxLoss", "ArmHubertConfig", "ArmHubertForCTC", "ArmHubertForSequenceClassification",
           "ArmHubertForSuperbCTC", "ArmHubertForSuperbDiarization", "ArmHubertForXVector", "ArmHubertModel",
           "ArmHubertModelOutput", "ArmHubertPreTrainedModel", "SuperbSpecAugment", "compute_span_mask",
           "permutation_invariant_bce"]
