"""Shared test helpers: paths to bundled data and tiny model factories."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "original"
LIBRISPEECH = REPO / "data" / "tiny-librispeech" / "LibriSpeech"
sys.path.insert(0, str(REPO))

from configuration_armhubert import ArmHubertConfig  # noqa: E402


def tiny_config(**overrides) -> ArmHubertConfig:
    """A 4-layer ARM student small enough for CPU tests (same conv layout as the presets)."""
    values = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                  conv_dim=[16, 32, 32, 32, 32, 32, 64, 64, 64], num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4, reuse_pattern=[True, False, True, False], projection_dim=48,
                  layer_grad_scale=True, mask_time_prob=0.0)
    values.update(overrides)
    conv = ArmHubertConfig.from_preset("armhubert")
    return ArmHubertConfig(conv_kernel=conv.conv_kernel, conv_stride=conv.conv_stride, **values)


def bundled_waveforms(split: str = "train-clean-100", count: int = 4) -> list[torch.Tensor]:
    """The first `count` utterances of a bundled split, as float32 waveforms."""
    files = sorted(LIBRISPEECH.joinpath(split).rglob("*.flac"))[:count]
    return [torch.from_numpy(soundfile.read(f, dtype="float32")[0]) for f in files]


def pad_batch(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad waveforms into (B, S) values and a (B, S) 1/0 attention mask."""
    length = max(len(w) for w in waveforms)
    values = torch.zeros(len(waveforms), length)
    mask = torch.zeros(len(waveforms), length, dtype=torch.long)
    for i, w in enumerate(waveforms):
        values[i, : len(w)] = w
        mask[i, : len(w)] = 1
    return values, mask


@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    """Keep Hugging Face caches inside the test's tmp dir and never touch the network."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path
