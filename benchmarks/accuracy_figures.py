"""The accuracy benchmark's pictures: acc@K curves, and test sketches with their top-5 photos and attention.

The curves are numbers only and go to ``<results-dir>/<name>_acc_at_k_<dataset>.png``. The retrieval
pictures show the dataset's own sketches and photos, which must never be committed: for real data they
go to ``<runs-dir>/figures/`` (git-ignored); only generated (synthetic) data's picture goes to the
results folder, as ``<name>_retrievals_synthetic.png``.

The attention overlay is drawn against a uniform map, not stretched per image: red marks cells whose
weight is above uniform, full red at 3x uniform, so a near-uniform map shows as (almost) no red.
"""

from __future__ import annotations

from pathlib import Path

import torch
from accuracy_cells import Harness, dataset_key_of, read_cell, selected_model
from accuracy_config import PAPER, DatasetRef, has_attention
from accuracy_scoring import TestPass, centre_crop, score_test_split
from PIL import Image, ImageDraw

from fgsbir_plugin._common import atomic_path
from fgsbir_plugin.runtime import resolve_device

GREEN = (0, 190, 0)


def plot_acc_curves(h: Harness, ref: DatasetRef, rows: list[dict], path: Path, max_k: int = 20) -> Path:
    """acc@K on test for K = 1..max_k, mean ± std over each row's seeds, with the published points."""
    # matplotlib is the optional `plot` extra: imported only when a plot is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in rows:
        curves = []
        for seed in row["seeds"]:
            cell = read_cell(h.cell_path(ref.name, row["method"], seed))
            ranks = torch.tensor(cell["ranks"], dtype=torch.float64)
            ks = torch.arange(1, min(max_k, cell["num_gallery"]) + 1, dtype=torch.float64)
            curves.append((ranks[None, :] <= ks[:, None]).double().mean(dim=1) * 100.0)
        c = torch.stack(curves)
        mean = c.mean(0)
        ax.plot(ks.numpy(), mean.numpy(), marker=".", label=row["label"])
        if c.shape[0] > 1:
            std = c.std(0)
            ax.fill_between(ks.numpy(), (mean - std).numpy(), (mean + std).numpy(), alpha=0.15)
    for i, (label, (a1, a10)) in enumerate(PAPER.get(ref.name, {}).items()):
        ks_p = [k for k, v in ((1, a1), (10, a10)) if v is not None]
        vals = [v for v in (a1, a10) if v is not None]
        ax.scatter(ks_p, vals, marker="*^"[i % 2], s=90, color="k", zorder=5, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("K")
    ax.set_ylabel("acc@K (%) on test")
    ax.set_title(f"{ref.title}: acc@K (mean ± std over seeds)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _tile(table, index: int, image_size: int, tile: int, attention: torch.Tensor | None):
    """The evaluation view of one image as a PIL tile, with the attention above uniform laid over it in red."""

    view = centre_crop(table[index], image_size)
    if view.shape[0] == 1:
        view = view.expand(3, -1, -1)
    img = Image.fromarray(view.permute(1, 2, 0).contiguous().numpy()).resize((tile, tile))
    if attention is None:
        return img
    h, w = attention.shape[-2:]
    rel = attention[None].float() * (h * w)  # [1, 1, h, w]; 1 = uniform
    heat = torch.nn.functional.interpolate(rel, size=(tile, tile), mode="bilinear", align_corners=False)[0, 0]
    alpha = ((heat - 1.0) / 2.0).clamp(0.0, 1.0) * 0.7
    mask = Image.fromarray((alpha.numpy() * 255).astype("uint8"), mode="L")
    return Image.composite(Image.new("RGB", (tile, tile), (255, 0, 0)), img, mask)


def draw_retrievals(
    test: TestPass, path: Path, title: str, queries: int = 4, top: int = 5, tile: int = 112
) -> Path:
    """Rows of: a test sketch, then its ``top`` nearest photos (the true one outlined in green), each with
    the model's attention over it when the model has attention."""

    nq = min(queries, test.dist.shape[0])
    rows = torch.linspace(0, test.dist.shape[0] - 1, nq).round().long().tolist()
    pad, head = 6, 30
    top = min(top, test.dist.shape[1])
    canvas = Image.new("RGB", (pad + (tile + pad) * (1 + top), head + (tile + pad) * nq + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), title, fill=(0, 0, 0))
    draw.text(
        (pad, 15), "sketch | top photos (green: true match); red: attention above uniform", fill=(0, 0, 0)
    )
    s_att, p_att = test.sketch.attention, test.photo.attention
    for r, q in enumerate(rows):
        y = head + r * (tile + pad)
        att = s_att[q] if s_att is not None else None
        canvas.paste(_tile(test.sketch_table, q, test.image_size, tile, att), (pad, y))
        for j, g in enumerate(torch.argsort(test.dist[q], stable=True)[:top].tolist()):
            x = pad + (tile + pad) * (1 + j)
            att = p_att[g] if p_att is not None else None
            canvas.paste(_tile(test.photo_table, g, test.image_size, tile, att), (x, y))
            if g == int(test.target[q]):
                draw.rectangle((x - 3, y - 3, x + tile + 2, y + tile + 2), outline=GREEN, width=3)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def _pick_row(h: Harness, rows: list[dict]) -> dict | None:
    """The best row by mean acc@1 (then acc@10) among trained rows with attention, else among trained rows."""
    done = [r for r in rows if not r["not_run"] and r["acc1_mean"] is not None]
    trained = [r for r in done if h.bench["methods"][r["method"]]["kind"] == "timm"]
    attended = [r for r in trained if has_attention(h.bench["methods"][r["method"]])]
    pool = attended or trained
    return max(pool, key=lambda r: (r["acc1_mean"], r["acc10_mean"])) if pool else None


def _retrieval_picture(h: Harness, ref: DatasetRef, row: dict, path: Path) -> Path | None:
    seed = row["seeds"][0]
    cell = read_cell(h.cell_path(ref.name, row["method"], seed))
    run_dir = h.run_dir(ref.name, row["method"], seed)
    if cell is None or not (run_dir / "model" / "config.json").is_file():
        print(f"[accuracy] {ref.name}: no retrieval picture ({run_dir} holds no model)")
        return None
    train = cell["config"]["train"]
    sketches, photos = h.datasets(ref, seed, float(train["validation_size"]))
    dev = resolve_device(h.device)
    model, distance = selected_model(run_dir, None, dev)
    test = score_test_split(
        model,
        sketches["test"],
        photos["test"],
        device=dev,
        distance=distance,
        image_size=train["image_size"],
        batch_size=train["eval_batch_size"],
        freeze=train["freeze"],
        dataset_key=dataset_key_of(ref),
    )
    title = f"{ref.title}: {row['label']} (seed {seed}), test acc@1 {test.metrics['acc@1']:.1f}"
    return draw_retrievals(test, path, title)


def make_figures(h: Harness, refs: list[DatasetRef], rows: list[dict]) -> list[Path]:
    """Per dataset: the acc@K curves and the retrieval picture of its best attention model; returns the files."""
    written = []
    max_k = int(h.bench.get("curve_max_k", 20))
    for ref in refs:
        mine = [r for r in rows if r["dataset"] == ref.name]
        done = [r for r in mine if not r["not_run"]]
        if not done:
            continue
        curves = Path(h.results_dir) / f"{h.results_name}_acc_at_k_{ref.name}.png"
        written.append(plot_acc_curves(h, ref, done, curves, max_k))
        row = _pick_row(h, mine)
        if row is None:
            continue
        folder = Path(h.results_dir) if ref.synthetic else Path(h.runs_dir) / "figures"
        path = folder / f"{h.results_name}_retrievals_{ref.name}.png"
        try:
            picture = _retrieval_picture(h, ref, row, path)
        except (OSError, ValueError, RuntimeError) as err:
            print(f"[accuracy] {ref.name}: retrieval picture skipped ({err})")
            picture = None
        if picture is not None:
            written.append(picture)
    return written
