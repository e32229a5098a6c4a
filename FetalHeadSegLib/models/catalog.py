"""The catalog of models: bundles shipped inside the package, and bundles the user imported.

A model is named by its id (``fetal-head-3d-cascade``), optionally with a version (``...@1.0.0``), or by the
path of a bundle folder. User models live in ``<home>/models/<id>-v<version>/`` (:func:`import_model` puts them
there); ``home`` defaults to the
``FETALHEADSEG_HOME`` environment variable, else ``~/.fetalheadseg`` (read when needed, never at import).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from FetalHeadSegLib.core.errors import BundleError
from FetalHeadSegLib.core.tasks import Task
from FetalHeadSegLib.models.bundle import ModelBundle, read_bundle

logger = logging.getLogger(__name__)

BUNDLED_MODELS = Path(str(resources.files("FetalHeadSegLib"))) / "resources" / "models"


@dataclass(frozen=True)
class CatalogEntry:
    """A known model: where it is and what it is for."""

    id: str
    version: str
    dimension: int
    task: str
    path: Path
    default: bool
    source: str  # "bundled" or "user"


def model_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The folder of user-imported models (not created here)."""
    if home is not None:
        return Path(home)
    return Path(os.environ.get("FETALHEADSEG_HOME", Path.home() / ".fetalheadseg"))


def list_models(home: str | os.PathLike[str] | None = None) -> list[CatalogEntry]:
    """Every model of the bundled catalog and of the user's model folder."""
    entries = []
    catalog_file = BUNDLED_MODELS / "catalog.json"
    if catalog_file.is_file():
        for item in json.loads(catalog_file.read_text(encoding="utf-8"))["models"]:
            entries.append(
                CatalogEntry(
                    item["id"],
                    item["version"],
                    int(item["dimension"]),
                    Task(item["task"]),
                    BUNDLED_MODELS / item["path"],
                    bool(item.get("default", False)),
                    "bundled",
                )
            )
    for folder in _user_bundle_folders(home):
        try:
            bundle = read_bundle(folder)
        except BundleError as err:
            logger.warning("skipping the user model in %s: %s", folder, err)
            continue
        entries.append(CatalogEntry(bundle.id, bundle.version, bundle.dimension, bundle.task, folder, False, "user"))
    return entries


def _user_bundle_folders(home: str | os.PathLike[str] | None) -> list[Path]:
    models = model_home(home) / "models"
    return sorted(p for p in models.iterdir() if (p / "bundle.json").is_file()) if models.is_dir() else []


def find_model(name: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> ModelBundle:
    """The bundle named by a folder path, ``id`` or ``id@version``.

    Raises:
        BundleError: no such model (the message lists the known ids).
    """
    candidate = Path(name)
    if (candidate / "bundle.json").is_file():
        return read_bundle(candidate)
    model_id, _, version = str(name).partition("@")
    for entry in list_models(home):
        if entry.id == model_id and (not version or entry.version == version):
            return read_bundle(entry.path)
    known = ", ".join(sorted({entry.id for entry in list_models(home)})) or "none installed"
    raise BundleError(f"no model {str(name)!r}: give a bundle folder or a known id ({known})")


def default_model(
    dimension: int, task: Task | str = Task.HEAD, home: str | os.PathLike[str] | None = None
) -> ModelBundle:
    """The default model for an input of this dimension and task.

    Raises:
        BundleError: no model is installed for it.
    """
    matches = [e for e in list_models(home) if e.dimension == dimension and e.task == Task(task)]
    if not matches:
        raise BundleError(
            f"no {dimension}D {Task(task).value} model is installed; pass --model with a bundle folder or id"
        )
    chosen = next((e for e in matches if e.default), matches[0])
    return read_bundle(chosen.path)


def import_model(source: str | os.PathLike[str], home: str | os.PathLike[str] | None = None) -> Path:
    """Install a model bundle into the user's model folder, ``<home>/models/<id>-v<version>/``.

    ``source`` is a bundle folder, its ``bundle.json``, or a ``.zip`` holding the folder (at its root or one level
    down). Every weight file is verified against its SHA-256 before anything is installed; a copy of the same id
    and version already there is replaced only once the new one is in place. Nothing is downloaded.

    Raises:
        BundleError: not a bundle, an unreadable zip, or a checksum mismatch (ChecksumError); nothing is changed.
    """
    import shutil
    import tempfile
    import zipfile

    from FetalHeadSegLib.models.bundle import verify_bundle

    source = Path(source)
    if not source.exists():
        raise BundleError(f"{source}: no such file or folder")
    models = model_home(home) / "models"
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".importing-", dir=models) as staging:
        staged = Path(staging) / "bundle"
        if source.is_file() and source.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(source) as archive:
                    archive.extractall(Path(staging) / "zip")  # member paths are kept inside the folder
            except (zipfile.BadZipFile, OSError) as err:
                raise BundleError(f"{source}: not a readable zip file ({err})") from err
            manifests = sorted((Path(staging) / "zip").glob("bundle.json")) or sorted(
                (Path(staging) / "zip").glob("*/bundle.json")
            )
            if len(manifests) != 1:
                raise BundleError(f"{source}: the zip must hold one model bundle folder (with bundle.json)")
            manifests[0].parent.rename(staged)
        else:
            folder = source.parent if source.name == "bundle.json" else source
            shutil.copytree(folder, staged)
        bundle = read_bundle(staged)
        verify_bundle(bundle)
        target = models / f"{bundle.id}-v{bundle.version}"
        previous = Path(staging) / "previous"
        if target.exists():
            target.rename(previous)
        try:
            staged.rename(target)
        except OSError:
            if previous.exists():
                previous.rename(target)  # the earlier copy stays installed
            raise
    logger.info("imported model %s %s into %s", bundle.id, bundle.version, target)
    return target


def remove_imported_models(home: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete every bundle in the user's model folder (the bundled models stay); returns the deleted folders."""
    import shutil

    removed = _user_bundle_folders(home)
    for path in removed:
        shutil.rmtree(path)
        logger.info("deleted the imported model %s", path)
    return removed
