"""The catalog of models: bundles shipped inside the package, and bundles the user imported.

A model is named by its id (``fetal-head-3d-cascade``), optionally with a version (``...@1.0.0``), or by the
path of a bundle folder. User models live in ``<home>/models/<id>/``; ``home`` defaults to the
``FETALHEADSEG_HOME`` environment variable, else ``~/.fetalheadseg`` (read when needed, never at import).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from FetalHeadSegLib.bundle import ModelBundle, read_bundle
from FetalHeadSegLib.errors import BundleError

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
                    item["task"],
                    BUNDLED_MODELS / item["path"],
                    bool(item.get("default", False)),
                    "bundled",
                )
            )
    user_models = model_home(home) / "models"
    if user_models.is_dir():
        for folder in sorted(p for p in user_models.iterdir() if (p / "bundle.json").is_file()):
            try:
                bundle = read_bundle(folder)
            except BundleError as err:
                logger.warning("skipping the user model in %s: %s", folder, err)
                continue
            entries.append(
                CatalogEntry(bundle.id, bundle.version, bundle.dimension, bundle.task, folder, False, "user")
            )
    return entries


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


def default_model(dimension: int, task: str = "head", home: str | os.PathLike[str] | None = None) -> ModelBundle:
    """The default model for an input of this dimension and task.

    Raises:
        BundleError: no model is installed for it.
    """
    matches = [e for e in list_models(home) if e.dimension == dimension and e.task == task]
    if not matches:
        raise BundleError(f"no {dimension}D {task} model is installed; pass --model with a bundle folder or id")
    chosen = next((e for e in matches if e.default), matches[0])
    return read_bundle(chosen.path)
