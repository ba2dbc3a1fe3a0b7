"""What the GPU suite reads off the machine: the environment its figures depend on, and how busy the GPU is.

:func:`environment` records the Python, torch, CUDA and package versions, the GPU and its driver.
:class:`GpuMonitor` samples the GPU's utilisation (NVML through ``torch.cuda.utilization``, else
``nvidia-smi``) in a thread while a cell runs, and reads torch's peak memory of the cell.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import threading
import time
from typing import Any

import torch
from PIL import Image, features


def environment(device: str) -> dict[str, Any]:
    """The machine and the versions that the figures depend on."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "device": device,
        "pillow": Image.__version__,
        "pillow_webp": features.check("webp"),  # the compact export's images are WebP
    }
    for name in ("timm", "datasets", "pytorch_metric_learning", "faiss"):
        try:
            env[name] = __import__(name).__version__
        except Exception as err:  # noqa: BLE001  (a missing or broken package is recorded, not fatal)
            env[name] = f"unavailable ({type(err).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            sm_count=props.multi_processor_count,
        )
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"]
            env["driver"] = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            env["driver"] = f"unknown ({type(err).__name__})"
    return env


class GpuMonitor:
    """Samples the GPU's utilisation (percent busy) every ``period_s`` in a thread while a cell runs, and reads
    torch's peak memory of this process. ``utilisation=False``: the memory alone (a cell in a worker process,
    whose parent samples the device for all of them)."""

    def __init__(self, enabled: bool, period_s: float = 0.5, utilisation: bool = True) -> None:
        self.enabled, self.period_s, self.utilisation = enabled, period_s, utilisation
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), percent)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def read() -> float | None:
        try:
            return float(torch.cuda.utilization(0))  # NVML, through nvidia-ml-py
        except Exception:  # noqa: BLE001  (no NVML: ask nvidia-smi)
            pass
        try:
            query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
            return float(subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            value = self.read()
            if value is None:
                return
            self.samples.append((time.monotonic(), value))

    def __enter__(self) -> GpuMonitor:
        self.samples = []
        if self.enabled:
            if self.utilisation:
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, daemon=True)
                self._thread.start()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

    def utilisation_between(self, start: float, end: float) -> dict[str, Any]:
        """Mean utilisation of the samples taken between two ``time.monotonic()`` readings."""
        values = [v for t, v in self.samples if start <= t <= end]
        mean = sum(values) / len(values) if values else None
        return {"gpu_util_mean": None if mean is None else round(mean, 1), "gpu_util_samples": len(values)}

    def summary(self) -> dict[str, Any]:
        if not self.enabled:
            return {"gpu_util_mean": None, "gpu_util_samples": 0, "gpu_mem_peak_gib": None}
        util = self.utilisation_between(-math.inf, math.inf) if self.utilisation else {}
        return {
            "gpu_util_mean": None,
            "gpu_util_samples": 0,
            **util,
            "gpu_mem_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }
