"""`fgsbir --help` and argument errors must not import the library (torch, timm, faiss, datasets).

The start-up time itself is measured by benchmarks/cli_startup.py; here, what is imported decides it.
"""

import subprocess
import sys

import pytest

import fgsbir_cli
from fgsbir_cli import search as search_cli
from fgsbir_cli import train as train_cli
from fgsbir_plugin.search import faiss_params
from fgsbir_plugin.train import config

HEAVY = (
    "fgsbir_plugin",
    "torch",
    "timm",
    "numpy",
    "faiss",
    "datasets",
    "PIL",
    "huggingface_hub",
    "yaml",
    "gradio",
)

_PROBE = """
import sys
import fgsbir_cli
try:
    fgsbir_cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[0].split(",")))
print("LOADED:" + ",".join(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["index", "build", "--help"],
        ["search", "--help"],
        ["push", "--help"],
        ["app", "--help"],
        ["train", "--loss", "nope"],  # an argument error
        ["search", "--bogus"],
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(argv):
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.replace("sys.argv[0]", repr(",".join(HEAVY))), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    loaded = [line for line in proc.stdout.splitlines() if line.startswith("LOADED:")]
    assert loaded == ["LOADED:"], proc.stdout + proc.stderr


def test_cli_choices_agree_with_the_library():
    assert train_cli.LOSSES == config.LOSSES
    assert train_cli.MINERS == config.MINERS
    assert train_cli.OPTIMIZERS == config.OPTIMIZERS
    assert train_cli.SCHEDULES == config.SCHEDULES
    assert train_cli.PRECISIONS == config.PRECISIONS
    assert train_cli.CACHE_MODES == config.CACHE_MODES
    assert train_cli.BATCH_GROUPS == config.BATCH_GROUPS
    assert search_cli.METRICS == faiss_params.METRICS
    assert search_cli.DEFAULT_EF_SEARCH == faiss_params.DEFAULT_EF_SEARCH
    assert search_cli.DEFAULT_NPROBE == faiss_params.DEFAULT_NPROBE


def test_version_is_the_installed_distribution():
    import fgsbir_plugin

    with pytest.raises(SystemExit):
        fgsbir_cli.main(["--version"])
    assert fgsbir_cli._version() == fgsbir_plugin.__version__


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--validation", "0.2"],  # --validation-size
        ["index", "build", "--photo", "p", "--out", "g.index"],  # --photos, a nested sub-command
    ],
)
def test_abbreviated_long_options_are_errors_not_another_option(argv, capsys):
    with pytest.raises(SystemExit) as err:
        fgsbir_cli.build_parser().parse_args(argv)
    assert err.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
