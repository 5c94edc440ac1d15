"""Shared test helpers: paths to bundled data and tiny model factories."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "original"
LIBRISPEECH = REPO / "data" / "tiny-librispeech" / "LibriSpeech"

from configuration_armhubert import ArmHubertConfig  # noqa: E402
from tools.make_random_teacher import make_random_teacher  # noqa: E402


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


def transcripts(split: str) -> dict[str, str]:
    """id -> transcript of a bundled split, straight from its *.trans.txt files."""
    lines = {}
    for path in sorted((LIBRISPEECH / split).glob("*/*/*.trans.txt")):
        for line in path.read_text().splitlines():
            utterance_id, text = line.split(" ", 1)
            lines[utterance_id] = text
    return lines


def logged_losses(run: Path) -> list[float]:
    """The training losses a Trainer run logged (its output folder's trainer_state.json)."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


def pad_batch(waveforms: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad waveforms into (B, S) values and a (B, S) 1/0 attention mask."""
    length = max(len(w) for w in waveforms)
    values = torch.zeros(len(waveforms), length)
    mask = torch.zeros(len(waveforms), length, dtype=torch.long)
    for i, w in enumerate(waveforms):
        values[i, : len(w)] = w
        mask[i, : len(w)] = 1
    return values, mask


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n`), give each worker an equal share of the cores for its torch threads and
    for the processes its tests start. Two workers of 2 threads each on 2 cores wait on each other's
    threads: the suite then took as long as it does serially."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """`evaluate` metric modules and `datasets` files of the tests go to one tmp dir, not the user's cache.

    One directory for the whole session: `evaluate` imports every metric module as a submodule of
    one package, which Python keeps at the directory where it was first imported."""
    import datasets
    import evaluate

    cache = tmp_path_factory.mktemp("hf-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", cache / "modules")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache / "datasets"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield cache


# Config entries that record where a model came from, not what it computes (`dtype` is set by loading;
# the weights' own dtypes are part of the key).
_CONFIG_PROVENANCE = {"_name_or_path", "architectures", "transformers_version", "auto_map", "dtype"}


def _export_key(model: torch.nn.Module, hidden_states: bool, opset: int | None) -> str:
    """A digest of everything an ONNX export of `model` depends on: its class, config, weights and the
    export's options (the conv encoder's `convs_as_matmul` switch included)."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in _CONFIG_PROVENANCE}
    switches = [m.convs_as_matmul for m in model.modules() if hasattr(m, "convs_as_matmul")]
    digest = hashlib.sha256(json.dumps([type(model).__qualname__, config, model.config._attn_implementation,
                                        switches, hidden_states, opset], sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def export_each_model_once(tmp_path_factory):
    """Export each distinct model to ONNX once per test session and copy the file for later requests.

    An export takes 10-25 s even for a tiny model, and the export, CLI and benchmark tests export the same
    tiny students (a third of the suite's time when each did its own). The key covers the model and the
    export's options, so a test that exports something new still runs the exporter."""
    from armhubert_training import export_onnx

    cache = tmp_path_factory.mktemp("onnx-exports")
    export = export_onnx._export

    def export_once(model, path, hidden_states, opset):
        cached = cache / f"{_export_key(model, hidden_states, opset)}.onnx"
        if cached.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cached, path)
        else:
            shutil.copyfile(export(model, path, hidden_states, opset), cached)
        return path

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_onnx, "_export", export_once)
        yield cache


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """A tiny random student (with distillation heads) saved as run_distill.py saves one."""
    from modeling_armhubert import ArmHubertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("student") / "tiny-student"
    ArmHubertModel(tiny_config()).save_pretrained(path)
    return path


@pytest.fixture
def offline_hf(tmp_path, monkeypatch):
    """Keep Hugging Face caches inside the test's tmp dir and never touch the network."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path

# A 2-layer student for a 2-layer tiny teacher (tools/make_random_teacher.py --size tiny).
TINY_STUDENT_OVERRIDES = ('{"num_hidden_layers": 2, "reuse_pattern": [true, false], "hidden_size": 64, '
                          '"num_attention_heads": 4, "intermediate_size": 96, "num_conv_pos_embeddings": 16, '
                          '"num_conv_pos_embedding_groups": 4, "conv_dim": [16, 32, 32, 32, 32, 32, 64, 64, 64]}')


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("teachers") / "tiny-hubert"
    make_random_teacher(str(path), arch="hubert", size="tiny")
    return path


FRESH_PROCESS_LOAD = r"""
import sys, torch
from transformers import AutoModel, AutoModelForCTC
model_dir, kind, inputs_file, outputs_file = sys.argv[1:]
auto = {"model": AutoModel, "ctc": AutoModelForCTC}[kind]
model = auto.from_pretrained(model_dir, trust_remote_code=True).eval()
assert "modeling_armhubert" not in sys.modules, "the repo's module must not be imported"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = torch.load(inputs_file)
with torch.no_grad():
    out = model(inputs["values"], attention_mask=inputs["mask"], output_hidden_states=True)
torch.save({"first": out[0], "hidden": out.hidden_states}, outputs_file)
"""


def run_in_fresh_process(model_dir: Path, kind: str, values: torch.Tensor, mask: torch.Tensor, work_dir: Path):
    """Load `model_dir` with AutoModel(ForCTC) + trust_remote_code in a new Python process outside the
    repo (nothing of ours importable) and return its first output and hidden states."""
    import os
    import subprocess

    inputs_file, outputs_file = work_dir / "inputs.pt", work_dir / f"outputs-{kind}.pt"
    torch.save({"values": values, "mask": mask}, inputs_file)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", FRESH_PROCESS_LOAD, str(model_dir), kind, str(inputs_file),
                    str(outputs_file)], cwd=work_dir, env=env, check=True, timeout=300)
    return torch.load(outputs_file)


@pytest.fixture(scope="session")
def hub_folder(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """A local dataset laid out like a hub one: parquet shards with an `Audio` column of
    embedded bytes and a "sentence" transcript column, splits "train" (train-clean-100) and
    "validation" (dev-clean). Returns (folder, {id: {"path", "text"}})."""
    import datasets
    import pyarrow as pa

    from armhubert_training.corpora.librispeech import librispeech_dataset

    folder = tmp_path_factory.mktemp("hub") / "tiny"
    (folder / "data").mkdir(parents=True)
    originals = {}
    for split, source in (("train", "train-clean-100"), ("validation", "dev-clean")):
        index = librispeech_dataset(LIBRISPEECH.parent, [source])
        rows = index.select_columns(["path", "text", "id"])[:]
        table = pa.table({
            "audio": [{"bytes": Path(p).read_bytes(), "path": Path(p).name} for p in rows["path"]],
            "sentence": rows["text"],
            "id": rows["id"],
        })
        # Arrow -> Audio via cast (writing through `Audio.encode_example` would need torchcodec)
        dataset = datasets.Dataset(table).cast_column("audio", datasets.Audio())
        dataset.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
        originals.update({i: {"path": p, "text": t} for i, p, t in zip(rows["id"], rows["path"], rows["text"])})
    return folder, originals
