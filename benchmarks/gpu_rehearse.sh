#!/usr/bin/env bash
# Rehearse the GPU suite's device call here, on the CPU, before a lent device's minutes are spent on it.
#
# The device runs `python3 benchmarks/gpu_suite.py --budget-s 480 --out $OUT` in a bare copy of the working
# tree (no .git, no ../shared, no registry) with its own Python and packages (Python 3.12, torch 2.11.0,
# torchvision 0.26.0, numpy 2.5.2, safetensors 0.8.0, huggingface_hub 1.33.0 in 2026-11; read afresh from
# /work/.library/device/KINDS.md, or $FGSBIR_DEVICE_KINDS, at each run) and the carried .data/gpu and .whl.
# This script rebuilds that here as far as a CPU can:
#   1. a virtual environment with those versions (once per set of versions; ~5 GiB, ~2 min; kept in
#      $FGSBIR_DEVICE_ENV, default ~/.cache/fgsbir/device-env) -- torch's CUDA build, which runs on the CPU;
#   2. a copy of what a call sends: the files git tracks or would add, plus .data/gpu and .whl;
#   3. the device command in that copy with a clean environment, `--device cpu` and a short budget
#      (BUDGET, default 150 s): the wheels installed by the suite itself, the commit read from the carried
#      manifest, the first chairs_v1 cell read from the compact export and trained until the deadline
#      stops it (so the deadline path runs too); the GPU benchmarks are skipped (their arguments name cuda);
#   4. `--smoke --parallel 2` in the same copy and environment: the benchmark scripts and the cells at toy
#      sizes, two cells at once in spawned worker processes.
# It fails when either run fails, a benchmark or cell fails, or the bundle is incomplete.
# What it cannot check: anything CUDA does (bf16 kernels, memory, speed, nvidia-smi/NVML, torch.compile).
#
# Usage, from the repository root after `python benchmarks/gpu_suite.py --prepare`:
#   bash benchmarks/gpu_rehearse.sh            # BUDGET=150 FGSBIR_DEVICE_ENV=... PYTHON312=... to change
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
cd "$repo"
budget=${BUDGET:-150}
venv=${FGSBIR_DEVICE_ENV:-$HOME/.cache/fgsbir/device-env}
# The device's versions, read from the device tool's KINDS.md ('pip list, as a session saw it') when it is
# there, so that the rehearsal follows the device image; else the versions it named in 2026-11.
kinds=${FGSBIR_DEVICE_KINDS:-/work/.library/device/KINDS.md}
pins="torch==2.11.0 torchvision==0.26.0 numpy==2.5.2 safetensors==0.8.0 huggingface_hub==1.33.0"
if [ -f "$kinds" ]; then
  read_pins=$(python3 - "$kinds" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
row = next((line for line in text.splitlines() if "pip list" in line and "torch " in line), "")
names = ("torch", "torchvision", "numpy", "safetensors", "huggingface_hub")
found = {n: re.search(rf"(?<![\w-]){re.escape(n)} (\d[\w.+]*?)(?=[,;| ]|$)", row) for n in names}
if all(found.values()):
    print(" ".join(f"{n}=={found[n].group(1)}" for n in names))
PY
  )
  if [ -n "$read_pins" ]; then pins=$read_pins; else echo "[rehearse] no versions found in $kinds; using: $pins"; fi
fi
# The device image's other packages that the suite and the carried wheels import (their versions unpinned).
others="pillow pyyaml pyarrow pandas fsspec requests tqdm filelock xxhash packaging scipy scikit-learn matplotlib"

for need in .data/gpu/manifest.json .whl; do
  [ -e "$need" ] || { echo "[rehearse] $need is missing: run 'python benchmarks/gpu_suite.py --prepare' first." >&2; exit 2; }
done

if [ ! -f "$venv/.ready" ] || [ "$(cat "$venv/.ready")" != "$pins" ]; then
  py=${PYTHON312:-}
  if [ -z "$py" ]; then
    for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 "$(uv python find 3.12 2>/dev/null)"; do
      if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py=$c; break; fi
    done
  fi
  [ -n "$py" ] || { echo "[rehearse] no Python 3.12 found: set PYTHON312=/path/to/python3.12." >&2; exit 2; }
  echo "[rehearse] building $venv with $py: $pins"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q $pins $others
  echo "$pins" > "$venv/.ready"
fi

work=$(mktemp -d /tmp/gpu_rehearse_XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/.data" "$work/home"
git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - | tar -xf - -C "$work/tree"
cp -r .data/gpu "$work/tree/.data/gpu"
cp -r .whl "$work/tree/.whl"
echo "[rehearse] the call's tree: $(du -sm "$work/tree" | cut -f1) MiB in $work/tree"

clean_env=(env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$work/home" LANG=C.UTF-8 PYTHONUNBUFFERED=1
           FGSBIR_DEVICE_SITE="$work/site")
cd "$work/tree"
rc=0
"${clean_env[@]}" python3 benchmarks/gpu_suite.py --budget-s "$budget" --out "$work/out" --device cpu --no-benchmarks || rc=$?
echo "[rehearse] device command: exit $rc"
smoke_rc=0
"${clean_env[@]}" PYTHONPATH="$work/site" python3 benchmarks/gpu_suite.py --smoke --parallel 2 --out "$work/smoke" || smoke_rc=$?
echo "[rehearse] smoke: exit $smoke_rc"

"$venv/bin/python" - "$work/out" "$work/smoke" "$rc" "$smoke_rc" <<'PY'
import json, sys, tarfile
from pathlib import Path

problems = []
for folder, rc in ((Path(sys.argv[1]), int(sys.argv[3])), (Path(sys.argv[2]), int(sys.argv[4]))):
    if rc:
        problems.append(f"{folder.name}: exit {rc}")
    missing = [n for n in ("gpu_call.json", "gpu_results.tar.gz", "gpu_suite.log") if not (folder / n).is_file()]
    if missing:
        problems.append(f"{folder.name}: no {', '.join(missing)}")
        continue
    call = json.loads((folder / "gpu_call.json").read_text())
    tarfile.open(folder / "gpu_results.tar.gz").getmembers()  # readable
    bad = [b["name"] for b in call["benchmarks"] if b["status"] not in ("ok", "done earlier")]
    bad += [c["cell"] for c in call["cells"] if c["status"].startswith("failed")]
    if bad:
        problems.append(f"{folder.name}: failed: {', '.join(bad)}")
    cells = ", ".join(f"{c['cell']} {c['status']}" for c in call["cells"]) or "none"
    print(f"[rehearse] {folder.name}: {call['environment']['python']} torch {call['environment']['torch']}; "
          f"benchmarks {[b['status'] for b in call['benchmarks']]}; cells: {cells}")
print("[rehearse] " + ("; ".join(problems) if problems else "both runs finished and returned a complete bundle"))
sys.exit(1 if problems else 0)
PY
