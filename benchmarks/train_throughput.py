"""Training throughput (images/s) of each DSSA variant against its bare timm trunk, in one run.

A training step is what ``fgsbir train`` does: embed B sketches and B photos, a PML triplet loss
over the cross-modal triplets of the batch (or HOLEF), backward, AdamW step. Each pair of models
gets the same random inputs; measurements alternate between the models of a pair (A B A B ...)
so that drift in machine load hits both alike, and the ratio DSSA / trunk is reported per pair.

    python benchmarks/train_throughput.py                    # GPU when present, full sizes
    python benchmarks/train_throughput.py --cpu-small        # 2-core sandbox: small batch and inputs

Writes benchmarks/results/train_throughput.{json,md} (or --out PREFIX). Variants that are not
registered (the DSSA family lives in fgsbir_plugin.models) are listed as missing, and their bare
trunks are still measured.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

import timm
import torch
from pytorch_metric_learning import losses
from report_files import write_report

import fgsbir_plugin  # noqa: F401  (registers the DSSA family)
from fgsbir_plugin.embedding import embedding_dim, forward_embed, model_input_spec
from fgsbir_plugin.holef import HOLEFDistance
from fgsbir_plugin.runtime import describe_device
from fgsbir_plugin.train.build import make_holef_loss

ROOT = Path(__file__).resolve().parents[1]

# (DSSA variant, bare timm trunk, extra kwargs for the DSSA variant)
PAIRS = [
    ("dssa", "sketch_a_net", {}),
    ("dssa_efficientnet_lite0", "tf_efficientnet_lite0", {}),
    ("dssa_resnet50", "resnet50", {}),
    ("dssa_vit_small_patch16_224", "vit_small_patch16_224", {}),
]


NOTES = {
    "dssa": "The bare `sketch_a_net` (num_classes=0) keeps Sketch-a-Net's own fc6/fc7 head (7x7x256 -> 512 -> 512, "
    "dropout 0.5), which DSSA replaces by attention + coarse-fine fusion; this pair compares two heads on the same conv trunk.",
}


def _create(name: str, image_size: int | None, **kwargs):
    if not timm.is_model(name):
        return None
    if image_size is not None and "vit" in name and not name.startswith("dssa"):
        kwargs.setdefault(
            "img_size", image_size
        )  # a bare ViT needs its patch grid at build time (DSSA-ViT is dynamic)
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def _step_fn(model, loss_name: str, device, precision: str, channels_last: bool):
    if loss_name == "holef":
        distance = getattr(model, "distance", None)
        if distance is None:
            distance = HOLEFDistance(embedding_dim(model))
        loss_fn = make_holef_loss(distance, 0.2, 5e-4)
    else:
        loss_fn = losses.TripletMarginLoss(margin=0.2)
    model.to(device).train()
    loss_fn.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # The loss may share the model's HOLEF distance: each parameter once.
    params = list({id(p): p for p in [*model.parameters(), *loss_fn.parameters()]}.values())
    opt = torch.optim.AdamW(params, lr=1e-4)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step(sketch, photo, labels):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            es = forward_embed(model, sketch, "sketch")
            ep = forward_embed(model, photo, "photo")
        loss = loss_fn(es.float(), labels, None, ep.float(), labels.clone())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_pair(entries, batch_size, device, precision, channels_last, warmup, iters, rounds):
    """Alternate timed rounds over ``entries`` [(label, model, loss, in_chans, size)]; img/s per entry."""
    torch.manual_seed(0)
    steps, inputs = {}, {}
    for label, model, loss_name, in_chans, size in entries:
        steps[label] = _step_fn(model, loss_name, device, precision, channels_last)
        key = (in_chans, size)
        if key not in inputs:
            mf = torch.channels_last if channels_last else torch.contiguous_format
            s = torch.randn(batch_size, in_chans, size, size, device=device).contiguous(memory_format=mf)
            p = torch.randn(batch_size, in_chans, size, size, device=device).contiguous(memory_format=mf)
            inputs[key] = (s, p, torch.arange(batch_size, device=device))
    keyed = {label: inputs[(c, s)] for label, _, _, c, s in entries}
    for label in steps:
        for _ in range(warmup):
            steps[label](*keyed[label])
    _sync(device)
    times = {label: [] for label in steps}
    for _ in range(rounds):
        for label in steps:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                steps[label](*keyed[label])
            _sync(device)
            times[label].append((time.perf_counter() - t0) / iters)
    # Best round: the least disturbed by other work on the machine.
    return {
        label: {"step_s": min(t), "img_per_s": 2 * batch_size / min(t), "rounds_s": t}
        for label, t in times.items()
    }


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-small", action="store_true", help="small batch and inputs for a CPU sandbox")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sketches per step (default 64; 4 with --cpu-small)"
    )
    parser.add_argument(
        "--image-size", type=int, default=None, help="input side (default each model's; 96 with --cpu-small)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default=None, help="default bf16 on GPU, fp32 on CPU"
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="DSSA variant names to run (default all)")
    parser.add_argument("--no-holef", dest="holef", action="store_false", help="skip the DSSA + HOLEF row")
    parser.add_argument(
        "--note", default=None, help="a line recorded with the results (e.g. which code was measured)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput"))
    return parser.parse_args(argv)


def _settings(args) -> dict:
    """Device, batch, input size, precision and timing rounds: the defaults depend on the device."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_small else "cpu")
    else:
        device = torch.device(args.device)
    small = args.cpu_small
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return {
        "device": device,
        "device_name": describe_device(device),
        "batch_size": args.batch_size or (4 if small else 64),
        "image_size": args.image_size or (96 if small else None),
        "precision": args.precision or ("bf16" if device.type == "cuda" else "fp32"),
        "warmup": args.warmup if args.warmup is not None else (1 if small else 5),
        "iters": args.iters or (2 if small else 20),
        "rounds": args.rounds or 3,
    }


def _entries(variant, trunk_name, kwargs, image_size, holef: bool, missing: list):
    """(label, model, loss, in_chans, size) to measure side by side for one DSSA variant and its trunk."""
    entries = []
    trunk = _create(trunk_name, image_size)
    dssa = _create(variant, image_size, **kwargs)
    if dssa is None:
        missing.append(variant)
    if trunk is None:
        missing.append(trunk_name)
    if trunk is None and dssa is None:
        return entries
    spec = model_input_spec(trunk if trunk is not None else dssa, image_size)
    size, in_chans = spec["image_size"], spec["in_chans"]
    if trunk is not None:
        entries.append((trunk_name, trunk, "triplet", in_chans, size))
    if dssa is not None:
        entries.append((variant, dssa, "triplet", in_chans, size))
        if holef:
            try:
                holef_model = _create(variant, image_size, holef=True, **kwargs)
            except (TypeError, NotImplementedError) as err:
                print(f"{variant} + HOLEF skipped: {err}")
            else:
                entries.append((f"{variant} + HOLEF", holef_model, "holef", in_chans, size))
    return entries


def _measure_rows(args, st: dict, missing: list) -> list[dict]:
    rows = []
    for variant, trunk_name, kwargs in PAIRS:
        if args.only and variant not in args.only:
            continue
        entries = _entries(variant, trunk_name, kwargs, st["image_size"], args.holef, missing)
        if not entries:
            continue
        in_chans, size = entries[0][3], entries[0][4]
        print(
            f"measuring {', '.join(e[0] for e in entries)} at {in_chans}x{size}x{size}, "
            f"batch {st['batch_size']} ...",
            flush=True,
        )
        res = measure_pair(
            entries,
            st["batch_size"],
            st["device"],
            st["precision"],
            args.channels_last,
            st["warmup"],
            st["iters"],
            st["rounds"],
        )
        base = res.get(trunk_name)
        for label, r in res.items():
            row = {"model": label, "pair": variant, "trunk": trunk_name, "input": [in_chans, size, size], **r}
            if base is not None:
                row["step_time_vs_trunk"] = r["step_s"] / base["step_s"]
            rows.append(row)
            extra = (
                f", step time x{row['step_time_vs_trunk']:.3f} of the bare trunk" if base is not None else ""
            )
            print(f"  {label}: {r['img_per_s']:.1f} img/s{extra}")
    return rows


def markdown(report: dict, device_type: str) -> str:
    rows, missing = report["rows"], report["missing_variants"]
    md = [
        "# Training throughput: DSSA variants vs their bare timm trunks",
        "",
        f"- device: {report['device']}",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        *([f"- note: {report['note']}"] if report["note"] else []),
        f"- batch: {report['batch_size']} sketches + {report['batch_size']} photos per step, precision "
        f"{report['precision']}, channels_last {report['channels_last']}; best of {report['rounds']} rounds of "
        f"{report['iters']} steps after {report['warmup']} warm-up steps",
        "",
        "| model | input | img/s | step (ms) | step time / bare trunk |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = f"{r['step_time_vs_trunk']:.3f}" if "step_time_vs_trunk" in r else "-"
        md.append(
            f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['img_per_s']:.1f} | "
            f"{1000 * r['step_s']:.1f} | {ratio} |"
        )
    if missing:
        md += ["", f"Not registered in this checkout (not measured): {', '.join(missing)}."]
    for variant in dict.fromkeys(r["pair"] for r in rows):
        if variant in NOTES:
            md += ["", f"Note ({variant}): {NOTES[variant]}"]
    if device_type == "cpu":
        md += [
            "",
            "CPU figures at a small batch and input size: the DSSA head's cost is nearly fixed while the trunk's "
            "grows with the input, so these ratios overstate the head's share of a full-size GPU step; "
            "run without --cpu-small on a GPU for the figure that matters.",
        ]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    args = _parse_args(argv)
    st = _settings(args)
    missing: list[str] = []
    rows = _measure_rows(args, st, missing)
    command = " ".join([Path(sys.executable).name, "benchmarks/train_throughput.py", *(argv or sys.argv[1:])])
    report = {
        "benchmark": "train_throughput",
        "device": st["device_name"],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "batch_size": st["batch_size"],
        "precision": st["precision"],
        "channels_last": args.channels_last,
        "image_size": st["image_size"],
        "warmup": st["warmup"],
        "iters": st["iters"],
        "rounds": st["rounds"],
        "images_per_step": 2 * st["batch_size"],
        "torch": torch.__version__,
        "note": args.note,
        "missing_variants": missing,
        "rows": rows,
    }
    out = Path(args.out)
    write_report(out.with_suffix(".json"), report, markdown(report, st["device"].type))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
