"""Publish a run's model with the search page as a Hugging Face Space (``fgsbir push --space``).

The Space repo is a folder that runs as it is, on the Hub or after a ``git clone``::

    README.md          the Space card: front matter (sdk: gradio, app_file: app.py) and what the page does
    app.py             builds the page from the folder it sits in and launches it
    requirements.txt   what the Space installs: fgsbir-plugin with the app extra
    model/             the timm model folder, exactly as ``fgsbir push`` uploads it (with its model card)
    gallery.index      the gallery, recording photos/ and model/ as its folders
    photos/<id>        the gallery's photos, at their ids' relative paths

The gallery index must have been built with the run's model (its weights and HOLEF matrix are checked)
and every photo it names must be a file under its photo folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..app.serve import SPACE_INDEX, SPACE_MODEL, SPACE_PHOTOS
from ..app.service import SearchService
from .card import front_matter, load_template
from .model import build_model_folder, read_run_folder
from .staging import staged_output
from .upload import build_and_upload, validate_repo_id

__all__ = ["build_space_folder", "push_space", "APP_PY", "default_requirement"]

APP_PY = '''"""A Hugging Face Space: draw a sketch, find the photo (the search page of fgsbir-plugin, `fgsbir app`).

Written by `fgsbir push --space`: the model is in model/, the gallery in gallery.index and photos/.
"""

from pathlib import Path

from fgsbir_plugin.app import launch_page, space_page

demo = space_page(Path(__file__).resolve().parent)

if __name__ == "__main__":
    # host and port None: Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (a Space sets them), else 127.0.0.1:7860
    launch_page(demo, host=None, port=None)
'''

_GRADIO_FALLBACK = (
    "6.31.0"  # the version the page is tested with, for the card when Gradio is not installed here
)


def default_requirement() -> str:
    """The pip requirement a Space installs: this fgsbir-plugin version with the app extra."""
    return f"fgsbir-plugin[app]=={__version__}"


def _gradio_version() -> str:
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return _GRADIO_FALLBACK


def _space_card(repo_id: str, service: SearchService, architecture: str, license: str) -> str:
    metadata_ = {
        "title": repo_id.split("/")[-1],
        "emoji": "✏️",
        "colorFrom": "gray",
        "colorTo": "red",
        "sdk": "gradio",
        "sdk_version": _gradio_version(),
        "app_file": "app.py",
        "pinned": False,
        "license": license,
        "short_description": "Draw a sketch, find the photo (fine-grained SBIR)",
        "tags": ["sketch-based-image-retrieval", "fgsbir", "timm", "image-retrieval"],
    }
    return load_template("space_card.md").substitute(
        front_matter=front_matter(metadata_),
        title=repo_id.split("/")[-1],
        gallery_size=len(service),
        architecture=architecture,
        metric=service.index.metric,
        repo_id=repo_id,
    )


def _copy_photos(service: SearchService, index: Path, dest: Path) -> None:
    """Copy every photo the index names to ``dest/<id>``; ValueError naming the first one missing."""
    ids = service.index.ids
    missing = [i for i in ids if service.photo_path(i) is None]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(ids)} photos of {index} are not files under {service.photos_root} "
            f"(first: {missing[0]!r}); pass --photos with the folder the index was built from."
        )
    for photo_id in ids:
        target = dest / photo_id
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(service.photo_path(photo_id), target)


def build_space_folder(
    run: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    repo_id: str,
    index: str | os.PathLike,
    photos: str | os.PathLike | None = None,
    license: str = "other",
    dataset_repo_id: str | None = None,
    requirement: str | None = None,
    secrets: Iterable[str | None] = (),
) -> Path:
    """Write the folder a Space push uploads (see the module docstring); ``out_dir`` must be absent or empty.

    ``photos`` overrides the photo folder the index records; ``requirement`` the pip line of
    ``requirements.txt`` (default :func:`default_requirement`; e.g. a ``git+https://...`` URL).
    """
    validate_repo_id(repo_id)
    trained = read_run_folder(run)
    index = Path(index)
    service = SearchService.from_files(index, trained.path, device="cpu", photos_root=photos)
    with staged_output(out_dir) as tmp:
        build_model_folder(
            trained,
            tmp / SPACE_MODEL,
            repo_id=repo_id,
            license=license,
            dataset_repo_id=dataset_repo_id,
            secrets=secrets,
        )
        _copy_photos(service, index, tmp / SPACE_PHOTOS)
        service.index.save(tmp / SPACE_INDEX, extra={"photos_root": SPACE_PHOTOS, "checkpoint": SPACE_MODEL})
        (tmp / "app.py").write_text(APP_PY, encoding="utf-8")
        (tmp / "requirements.txt").write_text((requirement or default_requirement()) + "\n", encoding="utf-8")
        architecture = str(getattr(service.model, "pretrained_cfg", {}).get("architecture", "unknown"))
        (tmp / "README.md").write_text(_space_card(repo_id, service, architecture, license), encoding="utf-8")
    return Path(out_dir)


def push_space(
    run: str | os.PathLike,
    repo_id: str,
    *,
    index: str | os.PathLike,
    photos: str | os.PathLike | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
    license: str = "other",
    dataset_repo_id: str | None = None,
    requirement: str | None = None,
    dry_run: str | os.PathLike | None = None,
    token: str | None = None,
    api=None,
) -> str:
    """Publish a run's model, a gallery and the search page as the Space ``repo_id``; return the commit
    URL (or the dry-run folder). ``dry_run=DIR`` writes the folder and touches no network."""
    validate_repo_id(repo_id)
    args = dict(
        repo_id=repo_id,
        index=index,
        photos=photos,
        license=license,
        dataset_repo_id=dataset_repo_id,
        requirement=requirement,
    )
    return build_and_upload(
        lambda folder, secrets: build_space_folder(run, folder, secrets=secrets, **args),
        dry_run=dry_run,
        token=token,
        repo_id=repo_id,
        repo_type="space",
        private=private,
        revision=revision,
        commit_message=commit_message
        or f"Upload {Path(run).name} and its search page with fgsbir push --space",
        overwrite=overwrite,
        marker="app.py",
        # Photos of an earlier gallery and pickled weights would linger beside the new ones; drop them.
        delete_patterns=["photos/**", "*.bin", "*.pth"],
        api=api,
    )
