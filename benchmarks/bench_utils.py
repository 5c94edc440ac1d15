"""Helpers shared by the benchmark scripts: the models compared, MAC counting, timing, machine
description, tables and JSON.

The models compared are the student presets (random weights, `ArmHubertConfig.from_preset`) and
HuBERT Base / WavLM Base built with random weights from Transformers' own default configs
(`HubertConfig()`, `WavLMConfig()`, the sizes of facebook/hubert-base-ls960 and microsoft/wavlm-base),
and DistilHuBERT, the 2-layer HuBERT of Chang et al. (2022): `HubertConfig(num_hidden_layers=2)`,
its published config (HuBERT Base's conv encoder and layer sizes), without its prediction heads.
Nothing is downloaded: sizes, MACs and speed do not depend on the weights.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count  # noqa: E402

from configuration_armhubert import PRESETS, ArmHubertConfig  # noqa: E402
from modeling_armhubert import ArmHubertModel  # noqa: E402

SAMPLE_RATE = 16000
BASELINES = ("hubert-base", "wavlm-base", "distilhubert")
MODEL_NAMES = tuple(PRESETS) + BASELINES
# armwavlm-s has exactly the armhubert-s network (it differs only in the teacher it was distilled
# from), so the speed benchmarks time the three distinct architectures by default.
DISTINCT_PRESETS = ("armhubert", "armhubert-s", "maskhubert")

# Tiny stand-ins with the same layout (conv stride 320, ARM pattern), for tests and smoke runs.
TINY_STUDENT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                    conv_dim=[16, 32, 32, 32, 32, 32, 64, 64, 64], num_conv_pos_embeddings=16,
                    num_conv_pos_embedding_groups=4, projection_dim=48)
TINY_BASELINE = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                     conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def is_baseline(name: str) -> bool:
    return name in BASELINES


def build_model(name: str, heads: bool = False, tiny: bool = False, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model in eval mode.

    Args:
        name: a preset (`armhubert`, `armhubert-s`, `armwavlm-s`, `maskhubert`) or `hubert-base` /
            `wavlm-base` / `distilhubert`.
        heads: keep the student's distillation heads (`projection_dim=768`); False = `projection_dim=0`,
            the network users deploy. Ignored for the baselines.
        tiny: a tiny model with the same layout instead (tests, smoke runs).
    """
    torch.manual_seed(seed)
    if is_baseline(name):
        from transformers import HubertConfig, HubertModel, WavLMConfig, WavLMModel

        config_class, model_class = {"hubert-base": (HubertConfig, HubertModel),
                                     "distilhubert": (HubertConfig, HubertModel),
                                     "wavlm-base": (WavLMConfig, WavLMModel)}[name]
        overrides = dict(TINY_BASELINE) if tiny else {}
        if name == "distilhubert":
            overrides["num_hidden_layers"] = 1 if tiny else 2
        return model_class(config_class(**overrides)).eval()
    if name not in PRESETS:
        raise ValueError(f"Unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}.")
    overrides: dict[str, Any] = dict(TINY_STUDENT) if tiny else {}
    if not heads:
        overrides["projection_dim"] = 0
    if tiny:
        pattern = PRESETS[name]["reuse_pattern"]
        overrides["reuse_pattern"] = [True, False] * 2 if not all(pattern) else [True] * 4
    return ArmHubertModel(ArmHubertConfig.from_preset(name, **overrides)).eval()


def random_audio(batch: int, seconds: float, seed: int = 0, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(batch, seconds * 16000) of unit-variance noise: speed and MACs do not depend on the content."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(round(seconds * SAMPLE_RATE))
    return torch.randn(batch, samples, generator=generator).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# MACs
# ----------------------------------------------------------------------------------------------

# On a CPU, scaled_dot_product_attention runs as these ops, which FlopCounterMode does not know;
# count them like the other fused attention kernels (forward: QK^T and PV; backward: the scores
# recomputed, then the four gradient products).
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS: dict[Any, Callable] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward] = \
        _cpu_sdpa_backward_flops


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts the CPU fused-attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of the matrix products and convolutions `fn` runs, in total and per module (dotted path).

    FlopCounterMode counts 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2. Elementwise work
    (norms, activations, softmax) is not counted, as usual for MACs figures.
    """
    counter = flop_counter()
    with counter:
        fn()
    per_module = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    return counter.get_total_flops(), per_module


def count_forward_macs(model: torch.nn.Module, input_values: torch.Tensor, **kwargs) -> tuple[int, dict[str, int]]:
    """MACs of one inference forward pass, in total and per module.

    Counted with gradients enabled (nothing is backpropagated): without them a student on a CPU computes its
    positional conv from spectra, whose operations are not the conv's MACs that a model's compute is
    quoted in."""
    with torch.enable_grad():
        flops, per_module = count_flops(lambda: model(input_values, **kwargs))
    return flops // 2, {name: value // 2 for name, value in per_module.items()}


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class QuietGate:
    """Keeps other processes' CPU work out of CPU timings on a shared machine (Linux only).

    Before a timed call it waits until the other processes have been idle for a short window;
    after the call it checks how much CPU time the rest of the machine used meanwhile (from
    /proc/stat minus this process's own time, both in clock ticks) and asks for a re-run when that
    exceeds `tolerance` of the call's wall time (in cores). Calls still disturbed after
    `max_attempts` tries are kept and counted as `contended`.
    """

    def __init__(self, tolerance: float = 0.05, max_attempts: int = 20, max_wait_s: float = 120.0,
                 window_s: float = 0.3):
        self.tolerance, self.max_attempts = tolerance, max_attempts
        self.max_wait_s, self.window_s = max_wait_s, window_s
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = Path("/proc/stat").exists() and Path("/proc/self/stat").exists()
        self.rejected = 0
        self.contended = 0
        self.waited_s = 0.0

    def _others_ticks(self) -> int:
        busy = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = busy
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return (user + nice + system + irq + softirq + steal) - (int(own[11]) + int(own[12]))

    def _wait_for_quiet(self) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < self.max_wait_s:
            before = self._others_ticks()
            time.sleep(self.window_s)
            if (self._others_ticks() - before) / self.hz <= self.tolerance * self.window_s:
                break
        self.waited_s += time.perf_counter() - start

    def time_call(self, fn: Callable[[], Any]) -> float:
        if not self.available:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        for attempt in range(self.max_attempts):
            self._wait_for_quiet()
            before = self._others_ticks()
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            others = (self._others_ticks() - before) / self.hz
            # One tick of slack: /proc/stat counts in 10 ms steps.
            if others <= self.tolerance * elapsed + 1.0 / self.hz:
                return elapsed
            self.rejected += 1
        self.contended += 1
        return elapsed

    def summary(self) -> dict[str, Any]:
        return {"rejected_calls": self.rejected, "contended_calls_kept": self.contended,
                "waited_for_quiet_s": round(self.waited_s, 1), "tolerance_cores": self.tolerance}


def time_interleaved(runners: dict[str, Callable[[], Any]], warmup: int, repeats: int,
                     device: str | torch.device = "cpu", gate: QuietGate | None = None) -> dict[str, list[float]]:
    """Seconds per call of each runner, measured round-robin (one call of each per round).

    Interleaving spreads slow phases of a shared machine over all runners alike, so their ratios
    stay meaningful even when absolute times drift; `gate` (CPU only) also re-runs calls that
    other processes disturbed. Every runner is warmed up `warmup` times first.
    """
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            if gate is not None:
                times[name].append(gate.time_call(fn))
                continue
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------------------------
# Machine, tables, JSON
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector extensions CPU speed depends on most: int8 products gain little over fp32 without VNNI.
VECTOR_EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_vector_extensions(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of VECTOR_EXTENSIONS the CPU has (Linux), else PyTorch's own reading ("AVX2", "AVX512", ...)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [name for name in VECTOR_EXTENSIONS if name in flags]
    except OSError:
        pass
    return [torch.backends.cpu.get_cpu_capability()]


def machine_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What the numbers were measured on."""
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_vector_extensions": cpu_vector_extensions(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
    try:
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def describe_machine(info: dict[str, Any]) -> str:
    extensions = info.get("cpu_vector_extensions")
    cpu = f"{info['cpu']} ({', '.join(extensions) or 'no AVX2'})" if extensions is not None else info["cpu"]
    text = (f"{cpu}, {info['cpu_cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
            f"transformers {info['transformers']}")
    if "gpu" in info:
        text = f"{info['gpu']} (CUDA {info['cuda']}); " + text
    return text


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub markdown table: `columns` = (key in each row, header)."""
    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How a benchmark was run, for the JSON's `command` field (`script` = its file, `argv` its arguments):
    `python -m benchmarks.NAME ARGS`, run from the repository root."""
    return " ".join(["python", "-m", f"benchmarks.{Path(script).stem}", *(sys.argv[1:] if argv is None else argv)])
