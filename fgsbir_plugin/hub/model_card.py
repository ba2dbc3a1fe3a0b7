"""The model card (README.md of a model repo), rendered from a run folder's records.

Each section that depends on the run has its own function: the YAML front matter (tags and the
``model-index`` of the evaluations), the usage snippet, the distance, the input, the training
configuration table and the evaluation table. ``render_model_card`` puts them into
``templates/model_card.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .. import __version__
from .card import format_number, front_matter, is_local_path, load_template, table_cell

__all__ = ["render_model_card", "METRIC_ORDER"]

# The keys written by fgsbir_plugin.metrics.retrieval_metrics, in the order a reader expects them.
METRIC_ORDER = ("acc@1", "acc@5", "acc@10", "mAP", "mean_rank", "median_rank")
_METRIC_LABELS = {
    "acc@1": "acc@1 (%)",
    "acc@5": "acc@5 (%)",
    "acc@10": "acc@10 (%)",
    "mAP": "mAP",
    "mean_rank": "mean rank",
    "median_rank": "median rank",
}
_BASE_TAGS = ("sketch-based-image-retrieval", "fine-grained-retrieval", "image-feature-extraction", "timm")


def _embedding_dim(hf_config: Mapping):
    """The embedding width: ``head_hidden_size``, else ``num_features`` for a config that lacks it."""
    return hf_config.get("head_hidden_size") or hf_config.get("num_features", "?")


# The loaders' dataset names, as the datasets' authors name them.
_DATASET_TITLES = {
    "chairs_v1": "QMUL-Chair-V1",
    "shoes_v1": "QMUL-Shoe-V1",
    "chairv2": "QMUL-Chair-V2",
    "shoev2": "QMUL-Shoe-V2",
    "sketchy": "Sketchy",
    "synthetic": "fgsbir-plugin's generated synthetic shapes",
}
# Datasets whose gallery is photo edge maps: their colour photos were never released.
_EDGE_MAP_GALLERIES = ("chairs_v1", "shoes_v1")


def _dataset_title(dataset: str) -> str:
    """``"QMUL-Chair-V1 (`chairs_v1`)"`` for a known loader name; anything else as it is."""
    return f"{_DATASET_TITLES[dataset]} (`{dataset}`)" if dataset in _DATASET_TITLES else dataset


def _gallery_note(dataset: str) -> str:
    """A Limitations item for datasets whose "photos" are edge maps; empty otherwise."""
    if dataset not in _EDGE_MAP_GALLERIES:
        return ""
    return (
        f"\n- The gallery of {_DATASET_TITLES[dataset]} is photo *edge maps* (its colour photos were never "
        "released): this model was trained and scored on edge maps, not on photographs. Expect much lower "
        "accuracy on colour photos unless they are turned into edge maps of the same kind."
    )


def _dataset_name(run_config: Mapping, evals: Sequence[Mapping]) -> str:
    for source in (run_config, *evals):
        for key in ("dataset", "data"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return "a local dataset folder" if is_local_path(value) else value
    return "an unrecorded dataset"


def _metric_keys(evals: Sequence[Mapping]) -> list[str]:
    present = {k for e in evals for k in (e.get("metrics") or {})}
    return [k for k in METRIC_ORDER if k in present] + sorted(present - set(METRIC_ORDER))


def _evaluation_row(e: Mapping, keys: Sequence[str]) -> str:
    metrics = e.get("metrics") or {}
    commit = e.get("commit")
    row = [
        str(e.get("split", "?")),
        str(e.get("dataset", "?")),
        str(e.get("views", 1)),
        format_number(e.get("num_queries")),
        format_number(e.get("num_gallery")),
        *(format_number(metrics.get(k)) for k in keys),
        str(e.get("device", "not recorded")),
        str(e.get("date", "not recorded")),
        f"`{commit[:12]}`" if isinstance(commit, str) and commit else "not recorded",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"


def _redact_command(command: str) -> str:
    """The command with each absolute local path (also as ``--flag=/path``) shown as ``<local path>``."""

    def word(token: str) -> str:
        flag, eq, value = token.partition("=")
        if eq and flag.startswith("-") and is_local_path(value):
            return f"{flag}=<local path>"
        return "<local path>" if is_local_path(token) else token

    return " ".join(word(t) for t in command.split(" "))


def _evaluation_table(evals: Sequence[Mapping]) -> str:
    if not evals:
        return (
            "No evaluation was recorded for this run: `fgsbir eval` writes `eval_<split>.json` into the "
            "run folder, and `fgsbir push` puts its numbers here."
        )
    keys = _metric_keys(evals)
    header = ["split", "dataset", "views", "queries", "gallery", *(_METRIC_LABELS.get(k, k) for k in keys)]
    header += ["device", "date", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_evaluation_row(e, keys) for e in evals]
    text = "\n".join(lines)
    text += (
        "\n\nAccuracies (acc@K: the true photo is among the K nearest) are percentages of sketch queries; "
        "ranks are 1-based positions of the true photo in the gallery; ties count against the model. "
        "Views: 1 is the centre crop; 10 averages the embeddings of the four corner crops, the centre crop "
        "and their mirror images."
    )
    commands = [
        _redact_command(e["command"]) for e in evals if isinstance(e.get("command"), str) and e["command"]
    ]
    if commands:
        text += "\n\nProduced by:\n\n```bash\n" + "\n".join(commands) + "\n```"
    return text


def _training_section(run_config: Mapping, dataset: str) -> str:
    if not run_config:
        return f"Trained on {dataset}; the run recorded no training configuration."
    lines = [f"Trained on **{dataset}**. The run's `run_config.json`:", "", "| key | value |", "|---|---|"]
    lines += [f"| `{key}` | {table_cell(run_config[key])} |" for key in sorted(run_config)]
    return "\n".join(lines)


def _model_index(repo_id: str, dataset: str, dataset_repo_id: str | None, evals: Sequence[Mapping]) -> list:
    results = []
    for e in evals:
        views = e.get("views", 1)
        suffix = "" if views == 1 else f" ({views} views)"
        metrics = [
            {"type": k, "name": _METRIC_LABELS.get(k, k) + suffix, "value": float(v)}
            for k, v in (e.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if not metrics:
            continue
        ds = {
            "name": str(e.get("dataset", dataset)),
            "type": dataset_repo_id or str(e.get("dataset", dataset)),
        }
        if e.get("split"):
            ds["split"] = str(e["split"])
        task = {"type": "image-feature-extraction", "name": "Fine-grained sketch-based image retrieval"}
        results.append({"task": task, "dataset": ds, "metrics": metrics})
    return [{"name": repo_id.split("/")[-1], "results": results}] if results else []


def _metadata(
    *,
    architecture: str,
    holef: bool,
    license: str,
    dataset_repo_id: str | None,
    model_index: list,
) -> dict:
    """The card's front matter: the Hub reads library, task, licence, tags, datasets and results here."""
    tags = list(_BASE_TAGS) + ["fgsbir-plugin"]
    if architecture.startswith("dssa"):
        tags.append("dssa")
    if holef:
        tags.append("holef")
    metadata = {
        "library_name": "timm",
        "pipeline_tag": "image-feature-extraction",
        "license": license,
        "tags": tags,
    }
    if dataset_repo_id:
        metadata["datasets"] = [dataset_repo_id]
    if model_index:
        metadata["model-index"] = model_index
    return metadata


def _usage_lines(*, architecture: str, in_chans: int, dim, holef: bool) -> list[str]:
    """The body of the card's ``with torch.no_grad():`` block: embed a sketch and a photo, compare them."""
    mode = "L" if in_chans == 1 else "RGB"
    # The DSSA models take the modality to pick the sketch or photo trunk when the trunks are
    # separate (and ignore it when shared); other timm models take the image only.
    modality = architecture.startswith("dssa")
    lines = [
        f'    sketch = transform(Image.open("sketch.png").convert("{mode}")).unsqueeze(0)  # [1, {in_chans}, H, W]',
        f'    photo = transform(Image.open("photo.jpg").convert("{mode}")).unsqueeze(0)',
        "    s = model(sketch" + (', modality="sketch"' if modality else "") + f")  # [1, {dim}]",
        "    p = model(photo" + (', modality="photo"' if modality else "") + f")  # [1, {dim}]",
    ]
    if holef:
        lines.append("    d = model.distance.compute_mat(s, p)  # [1, 1] HOLEF distance, smaller is closer")
    else:
        lines.append("    d = torch.cdist(s, p)  # [1, 1] Euclidean distance, smaller is closer")
    return lines


def _holef_section(dim) -> str:
    """How a HOLEF model's W ranks a gallery and builds a search index, for the card's usage part."""
    return f"""
### HOLEF distance and gallery search

`W` travels in `model.safetensors` with the rest of the weights, so the loaded model alone is enough
to rank a gallery or build a search index:

```python
from fgsbir_plugin.holef import holef_distance_matrix
from fgsbir_plugin.search import GalleryIndex

W = model.distance.weight_matrix().detach()  # [{dim}, {dim}], the W used in the energy
dist = holef_distance_matrix(sketch_embeddings, photo_embeddings, W)  # [Nq, Nr], smaller is closer
index = GalleryIndex({dim}, metric="holef", W=W)  # faiss-backed search with the same distance
```
"""


def _distance_description(*, holef: bool, dim, loss) -> str:
    if holef:
        return (
            f"HOLEF, the learned higher-order energy of the DSSA paper; its matrix W [{dim}, "
            f"{dim}] is part of the weights (`distance.*`) and loads with the model"
        )
    return "distance between embeddings (Euclidean)" + (f"; training loss `{loss}`" if loss else "")


def _input_description(pretrained_cfg: Mapping, input_size: Sequence[int]) -> str:
    shape = "x".join(str(v) for v in input_size)
    return (
        f"{shape} ({'grayscale' if input_size[0] == 1 else 'RGB'}), mean {pretrained_cfg.get('mean')}, "
        f"std {pretrained_cfg.get('std')}, {pretrained_cfg.get('interpolation', 'bilinear')} interpolation"
    )


def _summary(architecture: str, dataset: str, holef: bool) -> str:
    return (
        f"A `{architecture}` embedding model for fine-grained sketch-based image retrieval, trained on "
        f"{dataset} with [fgsbir-plugin](https://pypi.org/project/fgsbir-plugin/)"
        + (" with the HOLEF learned distance." if holef else ".")
    )


def _licence_section(license: str, dataset: str) -> str:
    return (
        f"The weights are published under `{license}`. They were trained on {dataset}: publishing them "
        "requires the right to do so under that dataset's terms, and those terms also bind the weights' "
        "users (many FG-SBIR datasets are released for non-commercial research only). The fgsbir-plugin "
        "code is MIT-licensed."
    )


def render_model_card(
    *,
    repo_id: str,
    hf_config: Mapping,
    run_config: Mapping,
    evals: Sequence[Mapping],
    license: str = "other",
    dataset_repo_id: str | None = None,
) -> str:
    """The README.md of a model repo.

    ``hf_config`` is the published ``config.json`` (architecture, model_args, pretrained_cfg), with
    ``head_hidden_size`` (the embedding width) where known; ``run_config`` the run's
    ``run_config.json``; ``evals`` the ``eval_<split>.json`` records.
    """
    architecture = str(hf_config.get("architecture", "unknown"))
    model_args = dict(hf_config.get("model_args") or {})
    pretrained_cfg = dict(hf_config.get("pretrained_cfg") or {})
    input_size = pretrained_cfg.get("input_size") or [3, 224, 224]
    dim = _embedding_dim(hf_config)
    holef = bool(model_args.get("holef"))
    dataset = _dataset_name(run_config, evals)
    dataset_title = _dataset_title(dataset)
    metadata = _metadata(
        architecture=architecture,
        holef=holef,
        license=license,
        dataset_repo_id=dataset_repo_id,
        model_index=_model_index(repo_id, dataset, dataset_repo_id, evals),
    )
    usage = _usage_lines(architecture=architecture, in_chans=input_size[0], dim=dim, holef=holef)
    return load_template("model_card.md").substitute(
        front_matter=front_matter(metadata),
        title=repo_id.split("/")[-1],
        summary=_summary(architecture, dataset_title, holef),
        embedding_dim=dim,
        architecture=architecture,
        model_args=table_cell(model_args) if model_args else "none (defaults)",
        input_desc=_input_description(pretrained_cfg, input_size),
        distance_desc=_distance_description(holef=holef, dim=dim, loss=run_config.get("loss")),
        repo_id=repo_id,
        embed_lines="\n".join(usage),
        holef_section=_holef_section(dim) if holef else "",
        training_section=_training_section(run_config, dataset_title),
        evaluation_section=_evaluation_table(evals),
        dataset_desc=dataset_title,
        gallery_note=_gallery_note(dataset),
        licence_section=_licence_section(license, dataset_title),
        plugin_version=__version__,
    )
