#!/usr/bin/env python
"""Write a randomly initialised HuBERT or WavLM teacher to a folder, for runs without hub access.

    python tools/make_random_teacher.py teachers/random-hubert-base                 # HuBERT Base sized
    python tools/make_random_teacher.py teachers/tiny-wavlm --arch wavlm --size tiny

`--size base` uses Transformers' own default config (the size of facebook/hubert-base-ls960 and
microsoft/wavlm-base); `--size tiny` is a 2-layer, 64-wide model for tests. Both keep the conv
feature encoder layout (total stride 320, receptive field 400) so students match their frames.
"""

from __future__ import annotations

import argparse

import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

ARCHITECTURES = {"hubert": (HubertConfig, HubertModel), "wavlm": (WavLMConfig, WavLMModel)}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def make_random_teacher(output_dir: str, arch: str = "hubert", size: str = "base", seed: int = 0, **overrides):
    config_class, model_class = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    # mask_time_prob > 0 makes Transformers create the mask embedding that masking distillation uses.
    config = config_class(**(TINY if size == "tiny" else {}), mask_time_prob=0.05, **overrides)
    model = model_class(config)
    model.save_pretrained(output_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False,
                             return_attention_mask=True).save_pretrained(output_dir)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", help="Folder to write the teacher to.")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="hubert", help="Teacher family.")
    parser.add_argument("--size", choices=["base", "tiny"], default="base", help="Base-sized or a tiny test model.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    args = parser.parse_args()
    model = make_random_teacher(args.output_dir, args.arch, args.size, args.seed)
    print(f"wrote {args.output_dir}: {type(model).__name__}, {model.num_parameters() / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
