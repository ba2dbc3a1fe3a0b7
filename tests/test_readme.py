"""The README's Python examples run as written.

Every ```python block of README.md has an entry in ``BLOCKS`` (keyed by the block's first line, less
its comment): either how to run it (names the block uses without defining them, path replacements,
checks of the outputs its comments promise) or why it is not run here (those blocks are not collected).
A new or reworded block without an entry fails ``test_every_python_block_has_an_entry``, so an example
cannot drift from the code unnoticed. The ``fgsbir`` commands of the bash blocks must parse, and the
training option table must list ``fgsbir train``'s options.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[tuple[int, str]]:
    """(line number of the first code line, code) for each ```python block of the README."""
    blocks, code, start = [], None, 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if code is None and line.strip() == "```python":
            code, start = [], number + 1
        elif code is not None and line.strip() == "```":
            blocks.append((start, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    return blocks


def _comment_dict(block: str, key: str) -> dict:
    """The dict literal written in a ``# {...}`` comment of ``block`` that holds ``key``."""
    for line in block.splitlines():
        text = line.split("#", 1)[-1].strip()
        if text.startswith("{") and f"'{key}'" in text:
            return ast.literal_eval(re.sub(r"<[^>]*>", "None", text))
    raise AssertionError(f"no '# {{...}}' comment with {key!r} in the block")


# --- what each block needs -----------------------------------------------------------------------------

_MY_DATASET = """
from PIL import Image
def _image(path, mode, shade):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (32, 32), shade).save(path)
root = Path("my_dataset")
# the README's layout, and a few more photos so that a 0.2 test fraction takes one
for i, name in enumerate(["red_chair", "chair-0042", "stool", "bench", "sofa"]):
    _image(root / "photos" / f"{name}.{'jpg' if i == 0 else 'png'}", "RGB", (10 * i, 50, 90))
for i, name in enumerate(["red_chair_1", "red_chair_2", "chair-0042-1", "stool_1", "bench_1", "sofa_1"]):
    _image(root / "sketches" / f"{name}.png", "L", 20 * i)
"""

_DAMAGED_DATASET = (
    _MY_DATASET
    + """
(root / "photos" / "table.png").write_bytes(b"not an image")   # one corrupt image
_image(root / "sketches" / "lamp_1.png", "L", 7)                 # two sketches without a photo
_image(root / "sketches" / "lamp_2.png", "L", 8)
"""
)

BLOCKS: dict[str, dict] = {
    "import torch, timm, fgsbir_plugin": {
        # the one line that downloads weights from the Hub
        "drop": 'timm.create_model("dssa_resnet50", pretrained_backbone=True)',
        "check": """
assert emb.shape == (2, 512) and att.shape == (2, 1, 7, 7)
assert torch.allclose(att.sum(dim=(1, 2, 3)), torch.ones(2))
""",
    },
    "from pytorch_metric_learning import losses, miners": {
        "setup": """
import torch
g = torch.Generator().manual_seed(0)
sketch_emb, photo_emb = torch.randn(8, 512, generator=g), torch.randn(8, 512, generator=g)
photo_ids = torch.arange(8)
""",
        "check": "assert torch.isfinite(loss) and loss.requires_grad",
    },
    "from fgsbir_plugin.data import load_fgsbir, load_fgsbir_pair": {
        "data": True,
        "check": """
first = load_fgsbir("chairv2", data_dir=DATA)["train"][0]
promised = _comment_dict(BLOCK, "sketch_id")
assert {k: first[k] for k in ("sketch_id", "photo_id", "category")} == {
    k: promised[k] for k in ("sketch_id", "photo_id", "category")}
assert first["sketch"].mode == "L" and first["sketch"].size == (256, 256)
assert set(sketches) == set(photos) == {"train", "validation", "test"}
assert not set(photos["train"]["photo_id"]) & set(photos["validation"]["photo_id"])
""",
    },
    'early = load_fgsbir("chairv2", fraction=0.3)': {
        "data": True,
        "setup": """
import numpy as np
from fgsbir_plugin.data import load_fgsbir
points = np.array([[0, 0, 0], [40, 40, 0], [80, 20, 1], [10, 90, 0], [90, 90, 1]], dtype=float)
""",
        "check": "assert img.mode == 'L' and img.size == (256, 256) and len(early['test']) == 323",
    },
    "from fgsbir_plugin.data import annotated_triplets": {
        "data": True,
        "check": """
assert triplets["train"][0] == _comment_dict(BLOCK, "sketch_id")
""",
    },
    'sketches, photos = load_fgsbir_pair("my_dataset", category="chair", test_fraction=0.2, seed=0)': {
        "setup": _MY_DATASET + "from fgsbir_plugin.data import load_fgsbir_pair\n",
        "check": """
assert sorted([*photos["train"]["photo_id"], *photos["test"]["photo_id"]]) == sorted(
    ["red_chair", "chair-0042", "stool", "bench", "sofa"])
assert len(photos["test"]) == 1 and set(photos["train"]["category"]) == {"chair"}
by_id = {row["sketch_id"]: row["photo_id"] for split in sketches for row in sketches[split]}
assert by_id["chair-0042-1"] == "chair-0042" and by_id["red_chair_2"] == "red_chair"
""",
    },
    "from fgsbir_plugin.data import SkipLog": {
        "setup": _DAMAGED_DATASET + "from fgsbir_plugin.data import load_fgsbir\n",
        "warns": "LenientSkipWarning",
        "check": """
promised = eval(re.search(r"# (Counter\\(.*\\))", BLOCK).group(1))
assert log.counts == promised, log.counts
""",
    },
    "from fgsbir_plugin.data import save_parquet, load_parquet, export_imagefolder": {
        "setup": """
from fgsbir_plugin.data import load_fgsbir
kw = dict(num_photos=8, sketches_per_photo=2, image_size=32, seed=0)
sketches = load_fgsbir("synthetic", config="sketches", **kw)
photos = load_fgsbir("synthetic", config="photos", **kw)
original = sketches
""",
        "check": """
import datasets
assert FAKE_HUB.api.uploaded is not None and "README.md" in FAKE_HUB.api.uploaded
folder = datasets.load_dataset("imagefolder", data_dir="chairv2_sketches")
for split in original:
    assert folder[split]["sketch_id"] == original[split]["sketch_id"]
    assert sketches[split]["sketch_id"] == original[split]["sketch_id"]
""",
    },
    "from fgsbir_plugin.data import load_fgsbir": {
        "check": "assert len(photos['train']) + len(photos['test']) == 128 and len(sketches['train']) == 3 * len(photos['train'])",
    },
    "from fgsbir_plugin.search import GalleryIndex": {
        "setup": """
import timm, torch, fgsbir_plugin
model = timm.create_model("dssa", holef=True).eval()
g = torch.Generator().manual_seed(0)
photo_embeddings, sketch_embeddings = torch.randn(20, 512, generator=g), torch.randn(3, 512, generator=g)
photo_ids = [f"p{i}" for i in range(20)]
""",
        "check": "assert dist.shape == ids.shape == (3, 10) and set(ids.ravel()) <= set(photo_ids)",
    },
    "from gradio_client import Client, handle_file": {
        "skip": "needs a running search page; test_app.py::test_search_endpoint_through_gradio_client makes this call"
    },
    "import fgsbir_plugin": {
        "skip": "downloads from the Hub; test_hub.py loads the same hf-hub: name from an offline cache"
    },
    "from datasets import load_dataset": {
        "skip": "downloads from the Hub; test_hub_dataset.py reads the pushed folder back with load_dataset"
    },
}


def _key(block: str) -> str:
    """A block's first line without its comment: what ``BLOCKS`` is keyed by."""
    return block.splitlines()[0].split("  #")[0].strip()


def _entry(block: str) -> dict | None:
    return BLOCKS.get(_key(block))


def test_every_python_block_has_an_entry():
    blocks = python_blocks()
    assert len(blocks) >= 10, "the README's python blocks were not found"
    missing = [f"README.md:{line}: {code.splitlines()[0]}" for line, code in blocks if _entry(code) is None]
    assert not missing, (
        "README python blocks without an entry in BLOCKS (say how to run them or why not):\n"
        + "\n".join(missing)
    )
    firsts = [_key(code) for _, code in blocks]
    assert not [k for k in BLOCKS if k not in firsts], (
        "BLOCKS has entries for blocks the README no longer has"
    )


def _runnable() -> list[tuple[int, str]]:
    return [(line, code) for line, code in python_blocks() if "skip" not in (_entry(code) or {})]


@pytest.mark.slow
@pytest.mark.parametrize("line,block", _runnable(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_readme_python_block_runs(line, block, tmp_path, monkeypatch, fake_hub, request):
    entry = _entry(block)
    if entry is None:
        pytest.fail(f"README.md:{line} has no entry in BLOCKS")
    code = block
    if "drop" in entry:
        assert entry["drop"] in code, f"README.md:{line}: the line to drop is gone: {entry['drop']}"
        code = "\n".join(c for c in code.splitlines() if entry["drop"] not in c)
    namespace = {"Path": Path, "Counter": Counter, "re": re, "BLOCK": block, "_comment_dict": _comment_dict}
    if entry.get("data"):
        data = request.getfixturevalue("data_dir")
        monkeypatch.setenv("FGSBIR_DATA", str(data))
        code = code.replace('"/data/fgsbir"', "DATA")
        namespace["DATA"] = str(data)
    namespace["FAKE_HUB"] = fake_hub
    monkeypatch.setenv("HF_TOKEN", "hf_READMEtestTOKEN0123456789abcdef")
    monkeypatch.chdir(tmp_path)
    exec(compile(entry.get("setup", ""), f"README.md:{line} (setup)", "exec"), namespace)
    if entry.get("warns"):
        import fgsbir_plugin.data

        with pytest.warns(getattr(fgsbir_plugin.data, entry["warns"])):
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
    else:
        exec(compile(code, f"README.md:{line}", "exec"), namespace)
    exec(compile(entry.get("check", ""), f"README.md:{line} (check)", "exec"), namespace)


# --- the fgsbir commands of the bash blocks ------------------------------------------------------------


def fgsbir_commands() -> list[tuple[int, list[str]]]:
    """(line, argv after ``fgsbir``) for each ``fgsbir`` command of the README's ```bash blocks.

    Continuation lines (and a quoted argument over several lines) are joined and comments dropped;
    ``torchrun ... -m fgsbir_plugin`` counts too.
    """
    commands, in_bash, pending, start = [], False, "", 0
    for number, line in enumerate(README.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash:
            continue
        if not pending:
            start = number
        pending += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted argument that goes on over the next line
            continue
        pending = ""
        if words[:1] == ["fgsbir"]:
            commands.append((start, words[1:]))
        elif "fgsbir_plugin" in words and words[words.index("fgsbir_plugin") - 1] == "-m":
            commands.append((start, words[words.index("fgsbir_plugin") + 1 :]))
    return commands


def test_every_fgsbir_command_in_the_readme_parses(capsys):
    from fgsbir_cli import build_parser

    commands = fgsbir_commands()
    assert len(commands) >= 15, "the README's fgsbir commands were not found"
    bad = []
    for line, argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            bad.append(f"README.md:{line}: fgsbir {shlex.join(argv)}\n  {capsys.readouterr().err.strip()}")
    assert not bad, "README commands the fgsbir parser refuses:\n" + "\n".join(bad)


def test_the_readme_cpu_recipe_command_trains_the_benchmark_dssa_full_cell(monkeypatch):
    """The README's "CPU recipe of the accuracy benchmark (its dssa_full row), as one command" gives the
    training settings and model the benchmark gives that cell (seed 0), up to where it writes and
    how it reports."""
    import timm
    import torch

    from fgsbir_cli import build_parser
    from fgsbir_cli.train import config_from_args
    from fgsbir_plugin.train.config import RESUME_OVERRIDABLE

    text = README.read_text().splitlines()
    marker = next(
        i for i, t in enumerate(text, 1) if "the CPU recipe of the accuracy benchmark (its dssa_full" in t
    )
    argv = next(argv for line, argv in fgsbir_commands() if line == marker + 1)
    readme = config_from_args(build_parser().parse_args(argv))

    monkeypatch.syspath_prepend(str(README.parent / "benchmarks"))  # as its scripts import each other
    config, cells = importlib.import_module("accuracy_config"), importlib.import_module("accuracy_cells")
    bench = config.load_benchmark_config(README.parent / "benchmarks" / "accuracy_configs" / "cpu.yaml")
    dataset = readme.data
    h = cells.Harness(bench, Path("unused"), "accuracy_cpu", Path("unused"), device=readme.device)
    ref = config.dataset_ref(dataset, bench, None)
    benchmark = cells.train_config(h, ref, "dssa_full", 0, validate=False)
    # where it writes, how often it saves, what it prints: not the recipe (the options a resume may change)
    ignore = RESUME_OVERRIDABLE | {"out", "save_every", "model_kwargs"}
    a = {k: v for k, v in readme.to_dict().items() if k not in ignore}
    b = {k: v for k, v in benchmark.to_dict().items() if k not in ignore}
    differ = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert not differ, f"README command vs benchmark dssa_full cell (README, benchmark): {differ}"
    assert dataset in bench["datasets"] and readme.device == "cpu"
    # The benchmark spells out some of the model's defaults: the same model either way (random trunk
    # here, the ImageNet file is the same name in both).
    kwargs = [dict(c.model_kwargs) for c in (readme, benchmark)]
    assert kwargs[0].pop("pretrained_backbone") == kwargs[1].pop("pretrained_backbone")
    models = []
    for c, kw in zip((readme, benchmark), kwargs):
        torch.manual_seed(0)
        models.append(timm.create_model(c.model, **kw).eval())
    shapes = [[(k, tuple(v.shape)) for k, v in m.state_dict().items()] for m in models]
    assert shapes[0] == shapes[1], f"the README's --model-kwargs build another model: {kwargs}"
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        same = torch.equal(models[0](x), models[1](x))
    assert same, f"the README's --model-kwargs build a model that computes otherwise: {kwargs}"


def test_the_training_option_table_lists_every_fgsbir_train_option():
    """The README's option table (under Training) and ``fgsbir train``'s options are the same set; a
    boolean's ``--no-`` form goes with it."""
    from fgsbir_cli import build_parser

    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    options = {o for a in train._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    lines = README.read_text().splitlines()
    start = lines.index("| option | default | meaning |")
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    listed = set()
    for row in table:
        first = re.split(r"(?<!\\)\|", row)[1]  # the first column; "\|" separates choices inside it
        listed |= set(re.findall(r"--[a-z][a-z0-9-]*", first))
    assert listed - options == set(), "the README's table names options fgsbir train does not have"

    def pair(option: str) -> str:  # a boolean's two forms, --x and --no-x, count as one
        return "--" + option[5:] if option.startswith("--no-") and "--" + option[5:] in options else option

    missing = {pair(o) for o in options} - {pair(o) for o in listed}
    assert missing == set(), "fgsbir train options missing from the README's table"


def test_the_accuracy_table_shows_the_ten_seed_results_file():
    # The README's real-data table is benchmarks/results/accuracy_cpu_seeds.json, rounded: a re-run or a
    # changed cell cannot leave the README's figures behind.
    import json

    study = json.loads((README.parent / "benchmarks" / "results" / "accuracy_cpu_seeds.json").read_text())
    columns = ("chairs_v1", "shoes_v1", "chairv2")
    want = {
        (r["dataset"], r["method"]): f"{r['acc1_mean']:.2f}"
        + ("" if r["method"] == "pretrained_zero_shot" else f" ± {r['acc1_std']:.2f}")
        for r in study["rows"]
    }
    lines = README.read_text().splitlines()
    start = lines.index("| method | QMUL-Chair-V1 (97 queries) | QMUL-Shoe-V1 (115) | QMUL-Chair-V2 (323) |")
    seen = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        raw = [c.strip() for c in line.strip("|").split("|")]
        if raw[0].startswith("*") and not raw[0].startswith("**"):
            continue  # published figures and the three-seed reference row, in italics
        label, *cells = (c.strip("*") for c in raw)
        method = "pretrained_zero_shot" if "zero-shot" in label else re.match(r"`(\w+)`", label).group(1)
        for dataset, cell in zip(columns, cells, strict=True):
            assert cell == want[(dataset, method)], (method, dataset)
        seen.add(method)
    assert seen == {m for _, m in want}
