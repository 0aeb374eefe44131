"""What `hwnas info` reports: versions, the machine, and which backends can be used here."""
from __future__ import annotations

import importlib
import os
import platform
import sys

import torch

import hwnas


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception:  # an import that fails for any reason means "not usable here"
        return None


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one, else what `platform` knows."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's vendor, family and model numbers (two hosts sold under one "AMD EPYC" name differ here), and the
    widest vector instructions torch uses on it (AVX2, AVX512): ONNX Runtime's fusion and a table's timings follow
    them (`LatencyTable.kernel_mismatch`)."""
    fields, isa = _cpuinfo(), torch.backends.cpu.get_cpu_capability()
    if not fields:
        return isa
    vendor, family, model = (fields.get(k, "?") for k in ("vendor_id", "cpu family", "model"))
    return f"{vendor} family {family} model {model}, {isa}"


def _steal_since_boot() -> float | None:
    from hwnas.latency.steal import cpu_times

    times = cpu_times()
    return None if times is None or times[1] <= 0 else round(100 * times[0] / times[1], 2)


def environment() -> dict:
    """A flat description of the software and hardware, also stored beside tables and benchmarks."""
    info = {
        "hwnas": hwnas.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        # the share of the machine's CPU time a hypervisor has given to other guests since boot (Linux; None
        # elsewhere): on a VM that loses much, multi-thread timings stall (hwnas.latency.steal)
        "cpu_steal_since_boot_pct": _steal_since_boot(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torchvision": _version("torchvision"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "tensorrt": _version("tensorrt"),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "torch_cuda_build": torch.version.cuda,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except Exception:
        info["onnxruntime_providers"] = []
    return info


def backends(env: dict) -> dict[str, str]:
    """Latency backend → 'usable' or why not."""
    providers = env.get("onnxruntime_providers", [])
    cuda = "usable" if env["cuda_available"] else "no CUDA device visible to torch"
    ort = "usable" if env["onnxruntime"] else "onnxruntime is not installed"
    return {
        "cpu": "usable",
        "cuda": cuda,
        "ort-cpu": ort,
        "ort-cuda": ("usable" if "CUDAExecutionProvider" in providers else
                     "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu on a GPU machine)"),
        "tensorrt": ("usable" if env["tensorrt"] and env["cuda_available"] else
                     "TensorRT is not installed (pip install 'hwnas[tensorrt]' on a machine with an NVIDIA GPU)"
                     if not env["tensorrt"] else "TensorRT is installed but there is no GPU"),
        "mobile": ort,
        "mobile-int8": ort,
    }
