from __future__ import annotations

import shutil
import types

import huggingface_hub
import pytest
from _train_fixtures import tiny_fgsbir

from fgsbir_plugin._common import default_data_dir


@pytest.fixture(scope="session")
def data_dir():
    """The real datasets folder; tests that need it are skipped, visibly, when it is absent."""
    root = default_data_dir()
    if root is None or not root.is_dir():
        pytest.skip("real FG-SBIR data not found: set $FGSBIR_DATA or place it at ../shared/data")
    return root


@pytest.fixture(scope="session")
def tiny():
    """A tiny generated sketch/photo dataset (train, validation, test) for training tests."""
    return tiny_fgsbir()


# ----------------------------------------------------------------------------------------------------
# The Hugging Face Hub, stood in for (tests/test_hub.py, tests/test_hub_dataset.py): no network.


class FakeHfApi:
    """Records the calls a push makes and keeps what it uploads, as ``huggingface_hub.HfApi`` would.

    ``exists``: the repo already holds a published artefact; ``private``: what ``repo_info`` reports;
    ``fail`` maps a method name to the exception it raises. ``uploaded`` maps each uploaded file's
    relative path to its bytes; ``folder`` is a copy of the uploaded folder.
    """

    def __init__(self, folder, *, exists=False, private=False, fail=None):
        self.folder, self.exists, self.private, self.fail = folder, exists, private, fail or {}
        self.calls, self.uploaded = [], None

    def _call(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def create_repo(self, repo_id, **kw):
        self._call("create_repo", repo_id, **kw)
        return f"https://huggingface.co/{repo_id}"

    def repo_info(self, repo_id, **kw):
        self._call("repo_info", repo_id, **kw)
        return types.SimpleNamespace(private=self.private)

    def create_branch(self, repo_id, **kw):
        self._call("create_branch", repo_id, **kw)

    def file_exists(self, repo_id, filename, **kw):
        self._call("file_exists", repo_id, filename, **kw)
        return self.exists

    def upload_folder(self, **kw):
        self._call("upload_folder", **kw)
        shutil.copytree(kw["folder_path"], self.folder)
        files = sorted(p for p in self.folder.rglob("*") if p.is_file())
        self.uploaded = {str(p.relative_to(self.folder)): p.read_bytes() for p in files}
        prefix = "datasets/" if kw.get("repo_type") == "dataset" else ""
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{prefix}{kw['repo_id']}/commit/abc")


class FakeHub:
    """What the ``fake_hub`` fixture returns: ``options`` configure the next ``HfApi`` built, ``api`` is
    the last one built, ``new_api(**options)`` builds one to pass as ``api=``."""

    def __init__(self, root):
        self.root, self.options, self.api, self._count = root, {}, None, 0

    def new_api(self, **options) -> FakeHfApi:
        self._count += 1
        self.api = FakeHfApi(self.root / f"upload{self._count}", **options)
        return self.api


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """``huggingface_hub.HfApi`` replaced by :class:`FakeHfApi`, so a push runs without the network."""
    hub = FakeHub(tmp_path / "fake-hub")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **_: hub.new_api(**hub.options))
    return hub


# End of the Hugging Face Hub stand-in.
# ----------------------------------------------------------------------------------------------------
