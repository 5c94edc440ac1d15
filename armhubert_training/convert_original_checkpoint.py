"""Convert an authors' Recycle-and-Distill checkpoint (PyTorch Lightning `.ckpt`) to a Transformers
model directory that `AutoModel.from_pretrained(DIR, trust_remote_code=True)` loads.

    python -m armhubert_training.convert_original_checkpoint --checkpoint armhubert.ckpt --output_dir armhubert-hf

The student's config comes from the checkpoint's `hyper_parameters.cfg["distiller"]` or, with
`--config`, from the YAML file the authors' training wrote. The teacher's weights
(`teacher_model.*`) are ignored. The released checkpoints were trained with the double softmax of
the authors' code, hence the default `--reuse_mode legacy_double_softmax`.

A `.ckpt` is a pickle, and unpickling can run any code. It is read with `torch.load(weights_only=True)`,
which accepts only tensors and plain Python containers and numbers (what the authors' training code
writes); a file that needs more is refused unless `--trust_checkpoint` is given.
"""

from __future__ import annotations

import argparse
import ast
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from configuration_armhubert import REUSE_MODES, ArmHubertConfig
from modeling_armhubert import ArmHubertModel

from .audio import raw_waveform_feature_extractor

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student_model."
TEACHER_PREFIX = "teacher_model."


def parse_python_literal(value: Any, name: str) -> Any:
    """Parse the authors' list fields, stored as Python expressions such as
    `[(512, 10, 5)] + [(512, 3, 2)] * 4`, without `eval`: only literals, `+` and `*` are allowed."""
    if not isinstance(value, str):
        return value

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (int, float, bool, str))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [evaluate(element) for element in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"Config field {name!r} = {value!r} contains {type(node).__name__}; only literals, "
                         "'+' and '*' are supported.")

    try:
        tree = ast.parse(value, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"Config field {name!r} = {value!r} is not a Python literal expression.") from err
    return evaluate(tree)


def config_from_distiller(distiller: dict[str, Any], projection_dim: int | None, reuse_mode: str) -> ArmHubertConfig:
    """Map the authors' `distiller` section onto an ArmHubertConfig."""
    unsupported = {
        "extractor_mode": "default", "layer_norm_first": False, "layer_type": "transformer",
        "pos_conv_depth": 1, "activation_fn": "gelu", "enable_tr_layer": False,
    }
    for key, expected in unsupported.items():
        if key in distiller and distiller[key] != expected:
            raise ValueError(f"The checkpoint uses {key}={distiller[key]!r}; only {expected!r} is supported.")
    conv_layers = parse_python_literal(distiller["conv_feature_layers"], "conv_feature_layers")
    num_layers = int(distiller["encoder_layers"])
    reuse_pattern = parse_python_literal(distiller.get("reuse_pattern", None), "reuse_pattern")
    return ArmHubertConfig(
        hidden_size=int(distiller["encoder_embed_dim"]),
        num_hidden_layers=num_layers,
        num_attention_heads=int(distiller["encoder_attention_heads"]),
        intermediate_size=int(distiller["encoder_ffn_embed_dim"]),
        hidden_dropout=float(distiller["dropout"]),
        attention_dropout=float(distiller["attention_dropout"]),
        activation_dropout=float(distiller["activation_dropout"]),
        feat_proj_dropout=float(distiller["dropout_input"]),
        conv_dim=[int(c) for c, _, _ in conv_layers],
        conv_kernel=[int(k) for _, k, _ in conv_layers],
        conv_stride=[int(s) for _, _, s in conv_layers],
        conv_bias=bool(distiller.get("conv_bias", False)),
        num_conv_pos_embeddings=int(distiller["conv_pos"]),
        num_conv_pos_embedding_groups=int(distiller["conv_pos_groups"]),
        reuse_pattern=list(reuse_pattern) if reuse_pattern is not None else [True] * num_layers,
        reuse_mode=reuse_mode,
        layer_grad_scale=bool(distiller.get("layer_grad_scale", False)),
        projection_dim=projection_dim,
        # The distilled student is a feature extractor; SpecAugment is for fine-tuning.
        mask_time_prob=0.0,
    )


# Authors' student parameter names -> ArmHubertModel names, as (pattern, replacement) regexes.
KEY_RENAMES = [
    (r"^mask_emb$", "masked_spec_embed"),
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.0\.2\.", "feature_extractor.conv_layers.0.layer_norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^encoder\.pos_conv\.0\.weight_g$", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"^encoder\.pos_conv\.0\.weight_v$", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"^encoder\.pos_conv\.0\.bias$", "encoder.pos_conv_embed.conv.bias"),
    (r"\.self_attn_layer_norm\.", ".layer_norm."),
    (r"\.self_attn\.", ".attention."),
    (r"\.fc1\.", ".feed_forward.intermediate_dense."),
    (r"\.fc2\.", ".feed_forward.output_dense."),
    (r"^proj_head\.(\d+)\.lin_proj\.", r"projection_heads.\1."),
]


def rename_student_key(key: str) -> str:
    """Authors' student parameter name -> ArmHubertModel parameter name."""
    for pattern, replacement in KEY_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


class UntrustedCheckpointError(ValueError):
    """A checkpoint holds objects that only a full (code-running) unpickling can load."""


def load_checkpoint_file(checkpoint: Path, trust_checkpoint: bool = False) -> dict[str, Any]:
    """`torch.load` a Lightning checkpoint without running code from it, unless `trust_checkpoint`.

    weights_only loading rebuilds only tensors and plain containers and numbers, which is what the authors'
    training code writes (Lightning stores their hyper-parameters as a plain dict of the training YAML).
    A full unpickling can run any code the file carries, so it is only done when the user vouches for the file.
    """
    if trust_checkpoint:
        logger.warning("--trust_checkpoint: loading %s with full unpickling, which runs any code the file "
                       "carries. Only do this for checkpoints from a source you trust.", checkpoint)
        return torch.load(checkpoint, map_location="cpu", weights_only=False)
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UntrustedCheckpointError(
            f"{checkpoint} holds objects beyond tensors and plain data, which safe loading (torch.load "
            "weights_only=True) refuses because unpickling them can run code from the file. If, and only if, you "
            "trust where this file comes from, convert it with: "
            "python -m armhubert_training.convert_original_checkpoint "
            f"--checkpoint {checkpoint} --output_dir DIR --trust_checkpoint (then use DIR). {_refusal(err)}"
        ) from err


def _refusal(err: pickle.UnpicklingError) -> str:
    """The one line of torch's long weights_only message that names what was refused."""
    marker = "WeightsUnpickler error:"
    for line in str(err).splitlines():
        if marker in line:
            return "Refused: " + line.split(marker, 1)[1].strip().split(". ")[0] + "."
    return f"Refused: {err}"


def load_original(checkpoint: Path, config_yaml: Path | None,
                  trust_checkpoint: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return the student's state dict (prefix removed) and the authors' `distiller` config section."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {checkpoint}")
    ckpt = load_checkpoint_file(checkpoint, trust_checkpoint)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{checkpoint} holds a {type(ckpt).__name__}, not a checkpoint dictionary: is it a "
                         "Recycle-and-Distill Lightning checkpoint?")
    if "state_dict" not in ckpt:
        raise ValueError(f"{checkpoint} has no 'state_dict': is it a Recycle-and-Distill Lightning checkpoint?")
    if config_yaml is not None:
        cfg = yaml.safe_load(config_yaml.read_text())
    else:
        cfg = (ckpt.get("hyper_parameters") or {}).get("cfg")
        if cfg is None:
            raise ValueError(f"{checkpoint} carries no hyper_parameters.cfg; pass the training YAML with --config.")
    if "distiller" not in cfg:
        raise ValueError("The config has no 'distiller' section (the student's architecture).")
    student = {k[len(STUDENT_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(STUDENT_PREFIX)}
    others = [k for k in ckpt["state_dict"] if not k.startswith((STUDENT_PREFIX, TEACHER_PREFIX))]
    if not student:
        raise ValueError(f"{checkpoint} has no '{STUDENT_PREFIX}*' weights.")
    if others:
        raise ValueError(f"Unexpected weights outside the student and teacher: {others[:5]}")
    return student, cfg["distiller"]


def convert(checkpoint: Path, output_dir: Path, config_yaml: Path | None = None,
            reuse_mode: str = "legacy_double_softmax", trust_checkpoint: bool = False) -> ArmHubertModel:
    original, distiller = load_original(checkpoint, config_yaml, trust_checkpoint)
    head_keys = sorted(k for k in original if k.startswith("proj_head.") and k.endswith("lin_proj.weight"))
    projection_dim = int(original[head_keys[0]].shape[0]) if head_keys else 0
    config = config_from_distiller(distiller, projection_dim, reuse_mode)
    model = ArmHubertModel(config)

    converted = {rename_student_key(k): v for k, v in original.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not match the architecture in its config.\n  missing: {missing}\n"
                         f"  unexpected: {unexpected}")
    for key, tensor in converted.items():
        if tensor.shape != expected[key].shape:
            raise ValueError(f"Shape mismatch for {key}: checkpoint {tuple(tensor.shape)}, model "
                             f"{tuple(expected[key].shape)}.")
    model.load_state_dict(converted, strict=True)
    model.eval()

    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    raw_waveform_feature_extractor().save_pretrained(output_dir)
    logger.info("Wrote %s (%d parameters, reuse_mode=%s)", output_dir, model.num_parameters(), reuse_mode)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="Authors' Lightning checkpoint (*.ckpt).")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config written by the authors' training (default: the one stored in the checkpoint).")
    parser.add_argument("--output_dir", type=Path, required=True, help="Where to write the Transformers model.")
    parser.add_argument("--reuse_mode", choices=REUSE_MODES, default="legacy_double_softmax",
                        help="How reuse layers apply the reused map; the released checkpoints need the default.")
    parser.add_argument("--trust_checkpoint", action="store_true",
                        help="UNSAFE: load the checkpoint with full unpickling, which runs any code it carries. "
                             "Needed only for a file that the default safe loading (tensors and plain data only) "
                             "refuses; use it only for files from a source you trust.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    convert(args.checkpoint, args.output_dir, args.config, args.reuse_mode, args.trust_checkpoint)


if __name__ == "__main__":
    main()
