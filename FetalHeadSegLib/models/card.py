"""A bundle's model card: evaluations recorded in ``bundle.json`` and the card rendered as ``MODEL_CARD.md``.

The one writer of a bundle's card after export (``training.evaluate --update-card``,
``benchmarks/stress_3d.py --update-card``); weights and their checksums are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_card(bundle_path: Path, evaluation: dict[str, Any], key: str = "evaluation") -> None:
    """Record an evaluation in bundle.json's model card under ``key`` (``evaluation``, or ``stress_suite`` from
    ``benchmarks/stress_3d.py``; weights and their checksums are untouched) and render the card as MODEL_CARD.md."""
    manifest = bundle_path / "bundle.json"
    data = json.loads(manifest.read_text())
    data["model_card"][key] = evaluation
    manifest.write_text(json.dumps(data, indent=2) + "\n")
    render_card(bundle_path)


def render_card(bundle_path: Path) -> None:
    """MODEL_CARD.md from bundle.json's model card."""
    data = json.loads((bundle_path / "bundle.json").read_text())
    card = data["model_card"]
    evaluation = card.get("evaluation", {})
    lines = [
        f"# {data['name']} (`{data['id']}` {data['version']})",
        "",
        f"{data['dimension']}D {data['task']} model, {len(data['networks'])} cascade level(s).",
        "",
    ]
    for key in ("intended_use", "training_data", "limitations", "retraining", "timing", "license", "citation"):
        if card.get(key):
            lines += [f"**{key.replace('_', ' ').capitalize()}.** {card[key]}", ""]
    lines += [
        "## Evaluation (held-out data, through the inference engine)",
        "",
        "```json",
        json.dumps(evaluation, indent=2),
        "```",
        "",
    ]
    stress = card.get("stress_suite")
    if stress:
        lines += [
            "## Stress suite (randomised phantoms, one factor at a time and all at once)",
            "",
            f"Command: `{stress['command']}`",
            "",
            stress["table_markdown"],
            "",
        ]
    lines += [
        "## Training",
        "",
        "```json",
        json.dumps(
            {k: card[k] for k in ("splits", "training", "validation_metrics_working_grid") if k in card}, indent=2
        ),
        "```",
        "",
    ]
    (bundle_path / "MODEL_CARD.md").write_text("\n".join(lines))
