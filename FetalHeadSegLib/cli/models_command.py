"""``fetalheadseg models``: list the installed models and verify their checksums; ``--import`` installs one."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "models",
        help="list the installed models and verify their checksums",
        description="List the bundled and user-imported models with their ids, "
        "dimensions, labels, sizes and SHA-256 status.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--import",
        dest="import_path",
        metavar="PATH",
        help="first install a model: a bundle folder, its bundle.json or a .zip of it (checksums verified)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from FetalHeadSegLib.core.errors import BundleError
    from FetalHeadSegLib.models.bundle import read_bundle, verify_bundle
    from FetalHeadSegLib.models.catalog import import_model, list_models

    if args.import_path:
        target = import_model(args.import_path)
        if not args.json:
            print(f"imported {args.import_path} into {target}")

    rows = []
    for entry in list_models():
        row: dict[str, Any] = {
            "id": entry.id,
            "version": entry.version,
            "dimension": entry.dimension,
            "task": entry.task,
            "source": entry.source,
            "default": entry.default,
            "path": str(entry.path),
        }
        try:
            bundle = read_bundle(entry.path)
            row["labels"] = [label.name for label in bundle.labels]
            row["levels"] = bundle.levels
            row["networks_per_level"] = len(bundle.cascades)
            row["tta_by_default"] = bundle.tta_by_default
            row["size_mb"] = round(sum((entry.path / f).stat().st_size for f in bundle.weight_files) / 1e6, 2)
            row["sha256"] = bundle.fingerprint
            verify_bundle(bundle)
            row["status"] = "ok"
        except BundleError as err:
            row["status"] = f"FAILED: {err}"
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if all(row["status"] == "ok" for row in rows) else 2
    if not rows:
        print("No models installed. Give --model with a bundle folder to `fetalheadseg segment`.")
        return 0
    for row in rows:
        labels = ", ".join(row.get("labels", []))
        members = row.get("networks_per_level", 1)
        ensemble = f" (ensemble of {members})" if members > 1 else ""
        flips = "  flips by default" if row.get("tta_by_default") else ""
        print(
            f"{row['id']}@{row['version']}  {row['dimension']}D {row['task']}  "
            f"levels {row.get('levels', '?')}{ensemble}{flips}  labels [{labels}]  {row.get('size_mb', '?')} MB  "
            f"{row['source']}{'  default' if row['default'] else ''}  checksum {row['status']}"
        )
    return 0 if all(row["status"] == "ok" for row in rows) else 2
