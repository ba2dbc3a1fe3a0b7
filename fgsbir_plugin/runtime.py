"""Where a command runs: the torch device it uses, and the provenance (device, commit) its result files record."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

__all__ = ["resolve_device", "describe_device", "cpu_model", "git_commit"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"device {name!r} is not a torch device name (try cpu, cuda, cuda:1 or auto)."
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asks for CUDA but no GPU is available; use --device cpu.")
    return device


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return None


def describe_device(device: torch.device | str) -> str:
    """A human description: the GPU name, or the CPU model, instruction set torch uses and core count.

    The instruction set is part of it because a model trained on CPUs whose kernels differ (AVX2 against
    AVX-512, say) follows slightly different floating-point paths: a fixed-seed run is bit-identical only
    on the same kind of CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    arch = platform.machine() or platform.processor()
    model = cpu_model()
    isa = torch.backends.cpu.get_cpu_capability()
    cpu = f"{model} ({arch}, {isa})" if model else f"{arch}, {isa}"
    return f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def git_commit() -> str | None:
    """The commit of the source checkout the package runs from, or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
