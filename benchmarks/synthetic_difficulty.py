"""How hard is the synthetic dataset? Trivial cues, raw pixels, an untrained and a trained tiny CNN.

Side by side on the same test split (one gallery photo per instance, every sketch a query):

- chance: 1 / number of test photos;
- trivial cues: nearest neighbour on image mean, on the grey-level histogram;
- raw pixels: nearest neighbour of the sketch against an edge map of the photo;
- oracle: a clean (noise-free) line drawing of each instance against the same edge maps, which shows
  that the instances are distinguishable and that the sketch noise is what makes it hard;
- tiny CNN (shared weights for both modalities, 4 conv layers, 64-d embedding), untrained and after
  a few epochs of triplet training on the train split, over a few seeds.

Run:  OMP_NUM_THREADS=1 python benchmarks/synthetic_difficulty.py [--epochs 30] [--seeds 3]
Writes benchmarks/results/synthetic_difficulty.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from report_files import write_report
from torch import nn

from fgsbir_plugin.data import synthetic

RESULTS = Path(__file__).resolve().parent / "results"


def acc_at_1(dist: np.ndarray, target: np.ndarray) -> float:
    """Percent of queries whose own photo is strictly nearest (ties count against)."""
    own = dist[np.arange(len(target)), target]
    return float(100.0 * np.mean((dist <= own[:, None]).sum(1) == 1))


def mean_rank(dist: np.ndarray, target: np.ndarray) -> float:
    """Mean 1-based rank of each query's own photo (ties count against); chance is (N + 1) / 2."""
    own = dist[np.arange(len(target)), target]
    return float(np.mean((dist <= own[:, None]).sum(1)))


def edge_map(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude [N, H, W] of grey images [N, H, W] in [0, 1]."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, :, 1:-1] = gray[:, :, 2:] - gray[:, :, :-2]
    gy[:, 1:-1, :] = gray[:, 2:, :] - gray[:, :-2, :]
    return np.hypot(gx, gy)


def cosine_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    return 1.0 - a @ b.T


def arrays(sketches, photos, split):
    sk = np.stack([np.asarray(x, dtype=np.float32) / 255.0 for x in sketches[split]["sketch"]])
    ph = np.stack([np.asarray(x, dtype=np.float32) / 255.0 for x in photos[split]["photo"]])
    index = {pid: i for i, pid in enumerate(photos[split]["photo_id"])}
    target = np.array([index[pid] for pid in sketches[split]["photo_id"]])
    return sk, ph, target


class TinyNet(nn.Module):
    """Shared-weight embedding: [B, 3, S, S] in [-1, 1] -> [B, 64], unit norm."""

    def __init__(self, dim: int = 64):
        super().__init__()
        layers = []
        c_in = 3
        for c in (16, 32, 64, 64):
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, dim)

    def forward(self, x):
        return F.normalize(self.head(self.features(x).mean((2, 3))), dim=1)


def to_tensor_sketch(sk: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(sk).unsqueeze(1).expand(-1, 3, -1, -1).mul(2).sub(1).contiguous()


def to_tensor_photo(ph: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ph).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()


def shift_augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (replicate padding), per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    for i in range(n):
        dy, dx = offs[i].tolist()
        out[i] = padded[i, :, dy : dy + h, dx : dx + w]
    return out


@torch.no_grad()
def evaluate(net: nn.Module, sk: torch.Tensor, ph: torch.Tensor, target: np.ndarray, rank: bool = False):
    """acc@1 in percent (and the mean rank when ``rank``) of sketches ``sk`` against gallery ``ph``."""
    net.eval()
    d = torch.cdist(net(sk), net(ph)).numpy()
    return (acc_at_1(d, target), mean_rank(d, target)) if rank else acc_at_1(d, target)


def train_cnn(seed: int, data: dict, epochs: int, batch: int = 32) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = TinyNet()
    sk_tr, ph_tr, t_tr = data["train"]
    sk_te, ph_te, t_te = data["test"]
    untrained, untrained_rank = evaluate(net, sk_te, ph_te, t_te, rank=True)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * (len(sk_tr) // batch))
    curve = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        losses = []
        perm = torch.randperm(len(sk_tr), generator=gen)
        for b in range(len(sk_tr) // batch):
            idx = perm[b * batch : (b + 1) * batch]
            pos = torch.from_numpy(t_tr[idx.numpy()])
            # one forward over both modalities, so that batch-norm statistics in training are
            # those of the mixture that the running averages (used at test time) describe
            # a left-right flip applied to a sketch and its photo together keeps them a pair
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xs, xp = sk_tr[idx], ph_tr[pos]
            xs = torch.where(flip[:, None, None, None], xs.flip(3), xs)
            xp = torch.where(flip[:, None, None, None], xp.flip(3), xp)
            emb = net(torch.cat([shift_augment(xs, gen), shift_augment(xp, gen)]))
            es, ep = emb[: len(idx)], emb[len(idx) :]
            d = torch.cdist(es, ep)  # [B, B]; column j is the photo of sketch j
            same = pos[:, None] == pos[None, :]
            d_pos = d.diagonal()
            # soft-margin triplet loss over every in-batch negative photo ("batch all"): the
            # hardest-negative variant collapses the embedding of this tiny net at the start
            gap = (d_pos[:, None] - d) / 0.1
            loss = F.softplus(gap)[~same].mean()
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            curve.append(
                {
                    "epoch": epoch + 1,
                    "loss": float(np.mean(losses)),
                    "test_acc@1": evaluate(net, sk_te, ph_te, t_te),
                }
            )
            print(curve[-1], file=sys.stderr)
    train_acc = evaluate(net, sk_tr, ph_tr, t_tr)
    _, trained_rank = evaluate(net, sk_te, ph_te, t_te, rank=True)
    return {
        "seed": seed,
        "untrained_acc@1": untrained,
        "trained_acc@1": curve[-1]["test_acc@1"],
        "untrained_mean_rank": untrained_rank,
        "trained_mean_rank": trained_rank,
        "train_split_acc@1": train_acc,
        "curve": curve,
        "train_seconds": time.perf_counter() - t0,
    }


def pixel_baselines(
    sk_te: np.ndarray, ph_te: np.ndarray, t_te: np.ndarray, num_photos: int, image_size: int
) -> dict[str, float]:
    """acc@1 of chance, trivial cues, raw pixels and the noise-free oracle on the test split."""
    n_test = len(ph_te)
    ph_gray = ph_te.mean(-1)
    ph_edges = edge_map(ph_gray)
    sk_ink = 1.0 - sk_te
    hist = lambda a: np.stack([np.histogram(x, bins=16, range=(0, 1))[0] for x in a]).astype(np.float64)  # noqa: E731
    baselines = {
        "chance": 100.0 / n_test,
        "image_mean": acc_at_1(np.abs(sk_te.mean((1, 2))[:, None] - ph_gray.mean((1, 2))[None]), t_te),
        "grey_histogram": acc_at_1(cosine_dist(hist(sk_te), hist(ph_gray)), t_te),
        "pixels_sketch_vs_photo_edges": acc_at_1(cosine_dist(sk_ink, ph_edges), t_te),
        "pixels_sketch_vs_photo_grey": acc_at_1(cosine_dist(sk_ink, 1.0 - ph_gray), t_te),
    }
    # oracle: a noise-free drawing of each test instance (rebuilt from its seed) against the photo edges
    first_test = num_photos - n_test
    clean = []
    for i in range(first_test, num_photos):
        clean.append(np.asarray(synthetic.clean_sketch(0, i, image_size), dtype=np.float32) / 255.0)
    clean = 1.0 - np.stack(clean)
    baselines["oracle_clean_drawing_vs_photo_edges"] = acc_at_1(
        cosine_dist(clean, ph_edges), np.arange(n_test)
    )
    return baselines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--num-photos", type=int, default=synthetic.DEFAULT_NUM_PHOTOS)
    ap.add_argument("--sketches-per-photo", type=int, default=synthetic.DEFAULT_SKETCHES_PER_PHOTO)
    ap.add_argument("--image-size", type=int, default=synthetic.DEFAULT_IMAGE_SIZE)
    ap.add_argument("--test-fraction", type=float, default=synthetic.DEFAULT_TEST_FRACTION)
    ap.add_argument(
        "--photo-mode",
        choices=("grey", "rgb"),
        default="grey",
        help="what the CNN sees of a photo: grey (as the 1-channel Sketch-a-Net DSSA does) or RGB",
    )
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print only, do not write results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    sketches, photos = synthetic.read(
        num_photos=args.num_photos,
        sketches_per_photo=args.sketches_per_photo,
        image_size=args.image_size,
        test_fraction=args.test_fraction,
    )
    gen_seconds = time.perf_counter() - t0
    sk_te, ph_te, t_te = arrays(sketches, photos, "test")
    n_test = len(ph_te)

    baselines = pixel_baselines(sk_te, ph_te, t_te, args.num_photos, args.image_size)

    data = {}
    for split in ("train", "test"):
        sk, ph, t = arrays(sketches, photos, split)
        if args.photo_mode == "grey":
            ph = np.repeat(ph.mean(-1, keepdims=True), 3, axis=-1)
        data[split] = (to_tensor_sketch(sk), to_tensor_photo(ph), t)
    runs = [train_cnn(s, data, args.epochs) for s in range(args.seeds)]
    summary = {
        k: {
            "mean": float(np.mean([r[k] for r in runs])),
            "min": float(np.min([r[k] for r in runs])),
            "max": float(np.max([r[k] for r in runs])),
        }
        for k in (
            "untrained_acc@1",
            "trained_acc@1",
            "untrained_mean_rank",
            "trained_mean_rank",
            "train_split_acc@1",
        )
    }
    result = {
        "benchmark": "synthetic_difficulty",
        "device": f"CPU: 2-core sandbox, 1 torch thread ({platform.processor() or platform.machine()})",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(
            [
                "OMP_NUM_THREADS=1 python benchmarks/synthetic_difficulty.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "torch": torch.__version__,
        "dataset": {
            "num_photos": args.num_photos,
            "sketches_per_photo": args.sketches_per_photo,
            "image_size": args.image_size,
            "num_test_photos": n_test,
            "num_test_sketches": len(t_te),
            "num_train_sketches": len(data["train"][2]),
            "generation_seconds": gen_seconds,
        },
        "metric": "acc@1 (percent of test sketches whose photo is the strict nearest of the test gallery)",
        "baselines_acc@1": baselines,
        "tiny_cnn": {"epochs": args.epochs, "photo_mode": args.photo_mode, "summary": summary, "runs": runs},
    }
    print(json.dumps(result, indent=1))
    if not args.no_write:
        write_report(RESULTS / "synthetic_difficulty.json", result, render_md(result), indent=1)
    return 0


def render_md(r: dict) -> str:
    d = r["dataset"]
    b = r["baselines_acc@1"]
    s = r["tiny_cnn"]["summary"]
    lines = [
        "# Synthetic dataset difficulty",
        "",
        f"- device: {r['device']}; date: {r['date']}; commit: {r['commit']}; torch {r['torch']}",
        f"- command: `{r['command']}`",
        f"- data: {d['num_photos']} photos x {d['sketches_per_photo']} sketches at {d['image_size']} px "
        f"(generated in {d['generation_seconds']:.1f} s); test: {d['num_test_photos']} gallery photos, "
        f"{d['num_test_sketches']} sketch queries",
        "",
        "| method | test acc@1 (%) |",
        "| --- | ---: |",
    ]
    names = {
        "chance": "chance (1 / gallery size)",
        "image_mean": "nearest image mean (trivial cue)",
        "grey_histogram": "nearest grey-level histogram (trivial cue)",
        "pixels_sketch_vs_photo_edges": "raw pixels: sketch vs photo edge map",
        "pixels_sketch_vs_photo_grey": "raw pixels: sketch vs photo grey",
        "oracle_clean_drawing_vs_photo_edges": "oracle: noise-free drawing vs photo edge map",
    }
    lines += [f"| {names[k]} | {v:.1f} |" for k, v in b.items()]
    e = r["tiny_cnn"]["epochs"]
    n = len(r["tiny_cnn"]["runs"])
    for k, label in (
        ("untrained_acc@1", "tiny CNN, untrained"),
        ("trained_acc@1", f"tiny CNN, {e} epochs triplet"),
    ):
        lines.append(
            f"| {label} (mean of {n} seeds, min-max) | {s[k]['mean']:.1f} ({s[k]['min']:.1f}-{s[k]['max']:.1f}) |"
        )
    lines += [
        "",
        f"Mean rank of the true photo (chance {(d['num_test_photos'] + 1) / 2:.1f}): untrained "
        f"{s['untrained_mean_rank']['mean']:.1f}, trained {s['trained_mean_rank']['mean']:.1f}. "
        f"The CNN sees photos as {r['tiny_cnn']['photo_mode']}.",
        "",
        f"Tiny CNN on its own train split after training: acc@1 {s['train_split_acc@1']['mean']:.1f}% "
        f"(train gallery of {d['num_photos'] - d['num_test_photos']} photos). "
        f"Training time per seed: {np.mean([x['train_seconds'] for x in r['tiny_cnn']['runs']]):.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
