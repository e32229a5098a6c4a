"""``python -m training.ensemble OUT BUNDLE BUNDLE [...] --id ID --version VERSION``: one model bundle whose every
cascade level averages the probabilities of the given bundles' networks (a small ensemble).

The members must have been trained for the same task on the same split, and agree on everything but their networks:
dimension, labels, preprocessing, cascade and postprocessing. The ensemble's model card starts from the first
member's, with every member's training data and training settings; its review thresholds are the first member's
until ``python -m training.evaluate OUT ... --calibrate-review`` replaces them (calibrate them before shipping).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from FetalHeadSegLib.core.errors import BundleError, FetalHeadSegError
from FetalHeadSegLib.models.bundle import ModelBundle, verify_bundle, write_bundle
from FetalHeadSegLib.models.card import render_card
from FetalHeadSegLib.models.catalog import find_model

SHARED = ("dimension", "task", "labels", "preprocessing", "cascade", "postprocessing")
"""What the members of an ensemble must have in common: everything that is not a network."""


def _member_card(bundles: list[ModelBundle], networks: int) -> dict[str, Any]:
    first = bundles[0].model_card
    described = "; ".join(
        f"({number}) {bundle.id} {bundle.version}: {bundle.model_card.get('training_data', 'not described')}"
        for number, bundle in enumerate(bundles, start=1)
    )
    keep = ("intended_use", "limitations", "license", "citation", "retraining", "timing", "splits", "history")
    return {
        **{key: first[key] for key in keep if key in first},
        "training_data": f"An ensemble of {networks} networks whose probabilities are averaged: {described}",
        "training": {"members": [bundle.model_card.get("training") for bundle in bundles]},
        "validation_metrics_working_grid": {
            "members": [bundle.model_card.get("validation_metrics_working_grid") for bundle in bundles]
        },
    }


def ensemble(
    members: Sequence[str | Path],
    destination: Path,
    model_id: str,
    version: str,
    name: str | None = None,
    half_precision: bool = False,
    tta_by_default: bool | None = None,
) -> ModelBundle:
    """Write the bundle averaging ``members`` (bundle folders or installed ids, ``id@version`` allowed); with
    ``half_precision`` every member's weights are stored in float16, as ``training.export --half`` stores them;
    ``tta_by_default``: whether runs use flip TTA unless told otherwise (None: as the first member).

    Raises:
        BundleError: fewer than two members, or members that differ in more than their networks or in their split.
        ChecksumError: a member's weights do not match their checksums.
    """
    if len(members) < 2:
        raise BundleError(f"an ensemble needs at least two bundles, got {len(members)}")
    bundles = [find_model(member) for member in members]
    first = bundles[0]
    for bundle in bundles[1:]:
        differ = [key for key in SHARED if getattr(bundle, key) != getattr(first, key)]
        if bundle.levels != first.levels:
            differ.append("number of levels")
        if bundle.model_card.get("splits") != first.model_card.get("splits"):
            differ.append("training split")
        if differ:
            raise BundleError(f"{bundle.path}: cannot join {first.path} in an ensemble: {', '.join(differ)} differ")
    cascades, states = [], []
    for bundle in bundles:
        verify_bundle(bundle)
        cascades += bundle.cascades
        states += [
            torch.load(bundle.path / file, map_location="cpu", weights_only=True) for file in bundle.weight_files
        ]
    description = ModelBundle(
        **{
            **first.__dict__,
            "path": destination,
            "id": model_id,
            "version": version,
            "name": name or f"{first.name}, ensemble of {len(cascades)}",
            "networks": cascades[0],
            "members": cascades[1:],
            "model_card": _member_card(bundles, len(cascades)),
            "sha256": {},
            "tta_by_default": first.tta_by_default if tta_by_default is None else tta_by_default,
        }
    )
    written = write_bundle(destination, description, states, half_precision=half_precision)
    render_card(destination)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ensemble", description=__doc__)
    parser.add_argument("output", type=Path, help="bundle folder to write")
    parser.add_argument("members", nargs="+", help="member bundles: folders or installed ids (id@version allowed)")
    parser.add_argument("--id", required=True, help="the ensemble's model id")
    parser.add_argument("--version", required=True, help="the ensemble's model version")
    parser.add_argument("--name", help="the ensemble's name (default: the first member's, with the member count)")
    parser.add_argument("--half", action="store_true", help="store every member's weights in float16")
    parser.add_argument(
        "--tta-by-default",
        action=argparse.BooleanOptionalAction,
        help="runs use flip test-time augmentation unless told otherwise (default: as the first member)",
    )
    args = parser.parse_args(argv)
    try:
        bundle = ensemble(args.members, args.output, args.id, args.version, args.name, args.half, args.tta_by_default)
    except FetalHeadSegError as err:
        print(f"ensemble: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {bundle.path} ({bundle.id}@{bundle.version}, {len(bundle.cascades)} members)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
