"""The log of a training run: ``log.jsonl`` always, ``log.csv`` and TensorBoard when asked for."""

from __future__ import annotations

import csv
import json
from typing import Any

from ..run_folder import RunFolder

__all__ = ["RunLog"]


class RunLog:
    """Appends one record per logged step and per epoch; a no-op on processes other than the main one."""

    def __init__(self, run: RunFolder, csv_too: bool, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = run.log_path
        self.csv_path = run.log_csv_path if csv_too else None
        self.tb = None
        if enabled and tensorboard:
            try:
                # Lazy: TensorBoard is an optional extra.
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run.tensorboard_dir))
            except ImportError:
                print("fgsbir train: TensorBoard is not installed; logging to log.jsonl only.")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.csv_path is not None:
            self._write_csv(record)
        if self.tb is not None:
            self._write_tensorboard(record)

    def _write_csv(self, record: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
        flat.update({f"val_{k}": v for k, v in record.get("val", {}).items()})
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=sorted(flat))
            if new:
                w.writeheader()
            w.writerow(flat)

    def _write_tensorboard(self, record: dict[str, Any]) -> None:
        step = record.get("step", 0)
        for k, v in record.items():
            if isinstance(v, int | float) and k != "step":
                self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, step)
        for k, v in record.get("val", {}).items():
            self.tb.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
