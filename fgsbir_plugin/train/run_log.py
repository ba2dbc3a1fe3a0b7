"""The log of a training run: ``log.jsonl`` always, ``log.csv`` and TensorBoard when asked for."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from .._common import atomic_write_bytes
from ..run_folder import RunFolder

__all__ = ["RunLog", "json_safe", "CSV_FIELDS"]

# One fixed header, so that step records and validation records share the columns.
CSV_FIELDS = [
    "event",
    "epoch",
    "step",
    "loss",
    "loss_avg",
    "lr",
    "img_per_s",
    "val_acc@1",
    "val_acc@5",
    "val_acc@10",
    "val_mAP",
    "val_mean_rank",
    "val_median_rank",
    "improved",
]


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so the record is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class RunLog:
    """Appends one record per logged step and per epoch; a no-op on processes other than the main one."""

    def __init__(self, run: RunFolder, csv_too: bool, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = run.log_path
        self.csv_path = run.log_csv_path if csv_too else None
        self.tb_dir = run.tensorboard_dir
        self.tb = None  # the writer, opened at the first record (after a resume's truncate_after)
        self._tb_writer = None
        self._purge_step: int | None = None
        if enabled and tensorboard:
            try:
                # Lazy: TensorBoard is an optional extra.
                from torch.utils.tensorboard import SummaryWriter

                self._tb_writer = SummaryWriter
            except ImportError:
                print("fgsbir train: TensorBoard is not installed; logging to log.jsonl only.")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = json_safe(record)
        with open(self.jsonl, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
        if self.csv_path is not None:
            self._write_csv(record)
        if self._tb_writer is not None:
            self._write_tensorboard(record)

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step``: a resumed run restarts from the state saved at
        ``step`` and logs the steps after it again, so a killed run's later records would repeat.
        TensorBoard's event files are append-only: its writer marks the events of later steps as purged
        (``purge_step``), and TensorBoard hides them."""
        if not self.enabled:
            return
        self._purge_step = step + 1
        if self.jsonl.is_file():
            kept = []
            for line in self.jsonl.read_text(encoding="utf-8").splitlines(keepends=True):
                try:
                    record_step = json.loads(line).get("step", 0)
                except (json.JSONDecodeError, AttributeError):
                    continue  # a line cut short by the kill
                if isinstance(record_step, int) and record_step <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            atomic_write_bytes(self.jsonl, "".join(kept).encode("utf-8"))
        if self.csv_path is not None and self.csv_path.is_file():
            with open(self.csv_path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(keep)
            atomic_write_bytes(self.csv_path, buf.getvalue().encode("utf-8"))

    def _write_csv(self, record: dict[str, Any]) -> None:
        new = not self.csv_path.exists()
        flat = {k: v for k, v in record.items() if not isinstance(v, dict | list)}
        flat.update({f"val_{k}": v for k, v in record.get("val", {}).items()})
        with open(self.csv_path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(flat)

    def _write_tensorboard(self, record: dict[str, Any]) -> None:
        if self.tb is None:
            self.tb = self._tb_writer(str(self.tb_dir), purge_step=self._purge_step)
        step = record.get("step", 0)
        for k, v in record.items():
            if isinstance(v, int | float) and k != "step":
                self.tb.add_scalar(f"{record.get('event', 'train')}/{k}", v, step)
        for k, v in record.get("val", {}).items():
            self.tb.add_scalar(f"val/{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
