"""Model and dataset cards (the README.md of a Hub repo), rendered from a run folder's records.

The prose lives in ``templates/model_card.md`` and ``templates/dataset_card.md`` (``string.Template``
files shipped with the package); this module computes the pieces that depend on the run: the YAML
front matter, the training-configuration table and the evaluation table.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from importlib import resources

__all__ = ["load_template", "render_model_card", "render_dataset_card", "METRIC_ORDER"]

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
# Absolute local paths (POSIX, home-relative, Windows drive) say nothing to a reader of a public card
# and can leak a user name, so they are replaced in the rendered tables.
_LOCAL_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/])")


def load_template(name: str) -> string.Template:
    """The card template ``name`` (e.g. ``"model_card.md"``) shipped in ``fgsbir_plugin/hub/templates``."""
    text = resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")
    return string.Template(text)


def _cell(value) -> str:
    """One Markdown table cell: strings verbatim, everything else as compact JSON, pipes escaped."""
    if isinstance(value, str):
        text = "<local path>" if _LOCAL_PATH.match(value) else value
    else:
        text = json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return "`" + text.replace("|", "\\|").replace("`", "'").replace("\n", " ") + "`"


def _number(value, digits: int = 2) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _front_matter(metadata: Mapping) -> str:
    import yaml

    return yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True).strip()


def _dataset_name(run_config: Mapping, evals: Sequence[Mapping]) -> str:
    for source in (run_config, *evals):
        for key in ("dataset", "data"):
            value = source.get(key)
            if isinstance(value, str) and value:
                return "a local dataset folder" if _LOCAL_PATH.match(value) else value
    return "an unrecorded dataset"


def _metric_keys(evals: Sequence[Mapping]) -> list[str]:
    present = {k for e in evals for k in (e.get("metrics") or {})}
    return [k for k in METRIC_ORDER if k in present] + sorted(present - set(METRIC_ORDER))


def _evaluation_table(evals: Sequence[Mapping]) -> str:
    if not evals:
        return (
            "No evaluation was recorded for this run: `fgsbir eval` writes `eval_<split>.json` into the "
            "run folder, and `fgsbir push` puts its numbers here."
        )
    keys = _metric_keys(evals)
    header = ["split", "dataset", "queries", "gallery", *(_METRIC_LABELS.get(k, k) for k in keys)]
    header += ["device", "date", "commit"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in evals:
        metrics = e.get("metrics") or {}
        commit = e.get("commit")
        row = [
            str(e.get("split", "?")),
            str(e.get("dataset", "?")),
            _number(e.get("num_queries")),
            _number(e.get("num_gallery")),
            *(_number(metrics.get(k)) for k in keys),
            str(e.get("device", "not recorded")),
            str(e.get("date", "not recorded")),
            f"`{commit[:12]}`" if isinstance(commit, str) and commit else "not recorded",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    text = "\n".join(lines)
    text += (
        "\n\nAccuracies (acc@K: the true photo is among the K nearest) are percentages of sketch queries; "
        "ranks are 1-based positions of the true photo in the gallery; ties count against the model."
    )
    commands = [e["command"] for e in evals if isinstance(e.get("command"), str) and e["command"]]
    if commands:
        text += "\n\nProduced by:\n\n```bash\n" + "\n".join(commands) + "\n```"
    return text


def _training_section(run_config: Mapping, dataset: str) -> str:
    if not run_config:
        return f"Trained on {dataset}; the run recorded no training configuration."
    lines = [f"Trained on **{dataset}**. The run's `run_config.json`:", "", "| key | value |", "|---|---|"]
    lines += [f"| `{key}` | {_cell(run_config[key])} |" for key in sorted(run_config)]
    return "\n".join(lines)


def _model_index(repo_id: str, dataset: str, dataset_repo_id: str | None, evals: Sequence[Mapping]) -> list:
    results = []
    for e in evals:
        metrics = [
            {"type": k, "name": _METRIC_LABELS.get(k, k), "value": float(v)}
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

    ``hf_config`` is the published ``config.json`` (architecture, model_args, pretrained_cfg);
    ``run_config`` the run's ``run_config.json``; ``evals`` the ``eval_<split>.json`` records.
    """
    from .. import __version__

    architecture = str(hf_config.get("architecture", "unknown"))
    model_args = dict(hf_config.get("model_args") or {})
    pcfg = dict(hf_config.get("pretrained_cfg") or {})
    num_features = hf_config.get("num_features", "?")
    holef = bool(model_args.get("holef"))
    dataset = _dataset_name(run_config, evals)
    input_size = pcfg.get("input_size") or [3, 224, 224]
    in_chans = input_size[0]
    mode = "L" if in_chans == 1 else "RGB"

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
    model_index = _model_index(repo_id, dataset, dataset_repo_id, evals)
    if model_index:
        metadata["model-index"] = model_index

    # The DSSA models take the modality to pick the sketch or photo trunk when the trunks are
    # separate (and ignore it when shared); other timm models take the image only.
    modality = architecture.startswith("dssa")
    embed = [
        f'    sketch = transform(Image.open("sketch.png").convert("{mode}")).unsqueeze(0)  # [1, {in_chans}, H, W]',
        f'    photo = transform(Image.open("photo.jpg").convert("{mode}")).unsqueeze(0)',
        "    s = model(sketch" + (', modality="sketch"' if modality else "") + f")  # [1, {num_features}]",
        "    p = model(photo" + (', modality="photo"' if modality else "") + f")  # [1, {num_features}]",
    ]
    if holef:
        embed.append("    d = model.distance.compute_mat(s, p)  # [1, 1] HOLEF distance, smaller is closer")
        distance_desc = (
            f"HOLEF, the learned higher-order energy of the DSSA paper; its matrix W [{num_features}, "
            f"{num_features}] is part of the weights (`distance.*`) and loads with the model"
        )
        holef_section = f"""
### HOLEF distance and gallery search

`W` travels in `model.safetensors` with the rest of the weights, so the loaded model alone is enough
to rank a gallery or build a search index:

```python
from fgsbir_plugin.holef import holef_distance_matrix
from fgsbir_plugin.search import GalleryIndex

W = model.distance.weight_matrix().detach()  # [{num_features}, {num_features}], the W used in the energy
dist = holef_distance_matrix(sketch_embeddings, photo_embeddings, W)  # [Nq, Nr], smaller is closer
index = GalleryIndex({num_features}, metric="holef", W=W)  # faiss-backed search with the same distance
```
"""
    else:
        embed.append("    d = torch.cdist(s, p)  # [1, 1] Euclidean distance, smaller is closer")
        loss = run_config.get("loss")
        distance_desc = "distance between embeddings (Euclidean)" + (
            f"; training loss `{loss}`" if loss else ""
        )
        holef_section = ""

    shape = "x".join(str(v) for v in input_size)
    input_desc = (
        f"{shape} ({'grayscale' if in_chans == 1 else 'RGB'}), mean {pcfg.get('mean')}, std {pcfg.get('std')}, "
        f"{pcfg.get('interpolation', 'bilinear')} interpolation"
    )
    summary = (
        f"A `{architecture}` embedding model for fine-grained sketch-based image retrieval, trained on "
        f"{dataset} with [fgsbir-plugin](https://pypi.org/project/fgsbir-plugin/)"
        + (" with the HOLEF learned distance." if holef else ".")
    )
    licence_section = (
        f"The weights are published under `{license}`. They were trained on {dataset}: publishing them "
        "requires the right to do so under that dataset's terms, and those terms also bind the weights' "
        "users (many FG-SBIR datasets are released for non-commercial research only). The fgsbir-plugin "
        "code is MIT-licensed."
    )
    return load_template("model_card.md").substitute(
        front_matter=_front_matter(metadata),
        title=repo_id.split("/")[-1],
        summary=summary,
        num_features=num_features,
        architecture=architecture,
        model_args=_cell(model_args) if model_args else "none (defaults)",
        input_desc=input_desc,
        distance_desc=distance_desc,
        repo_id=repo_id,
        embed_lines="\n".join(embed),
        holef_section=holef_section,
        training_section=_training_section(run_config, dataset),
        evaluation_section=_evaluation_table(evals),
        dataset_desc=dataset,
        licence_section=licence_section,
        plugin_version=__version__,
    )


def render_dataset_card(
    *,
    repo_id: str,
    name: str,
    split_sizes: Mapping[str, Mapping[str, int]],
    schemas: Mapping[str, Mapping[str, str]],
    configs: Sequence[Mapping],
    license: str = "other",
    source: str | None = None,
) -> str:
    """The README.md of a dataset repo.

    ``split_sizes[config][split]`` is a row count, ``schemas[config][column]`` a type description,
    ``configs`` the Hub ``configs`` YAML list (config_name, data_files) of the Parquet layout.
    """
    from .. import __version__

    total = sum(n for sizes in split_sizes.values() for n in sizes.values())
    size = next(
        label
        for bound, label in (
            (1_000, "n<1K"),
            (10_000, "1K<n<10K"),
            (100_000, "10K<n<100K"),
            (math.inf, "n>100K"),
        )
        if total < bound
    )
    metadata = {
        "license": license,
        "pretty_name": name,
        "task_categories": ["image-feature-extraction"],
        "tags": ["sketch-based-image-retrieval", "fine-grained-retrieval", "sketch", "fgsbir-plugin"],
        "size_categories": [size],
        "configs": [dict(c) for c in configs],
    }
    from ..data.schema import SPLITS

    present = {s for sizes in split_sizes.values() for s in sizes}
    splits = [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))
    table = ["| configuration | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for config, sizes in split_sizes.items():
        table.append(f"| `{config}` | " + " | ".join(str(sizes.get(s, 0)) for s in splits) + " |")
    schema = []
    for config, columns in schemas.items():
        schema.append(f"`{config}`:\n")
        schema += [f"- `{col}`: {desc}" for col, desc in columns.items()]
        schema.append("")
    licence_line = (
        f"The licence declared for this repository is `{license}`."
        if license != "other"
        else "See the original dataset's terms for the licence."
    )
    return load_template("dataset_card.md").substitute(
        front_matter=_front_matter(metadata),
        title=f"{name} (FG-SBIR, Parquet)",
        name=name,
        licence_line=licence_line,
        splits_table="\n".join(table),
        schema_section="\n".join(schema).strip(),
        repo_id=repo_id,
        source_section=source or f"Converted from the original `{name}` release with `fgsbir push-dataset`.",
        plugin_version=__version__,
    )
