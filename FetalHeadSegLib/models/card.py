"""A bundle's model card: evaluations and review thresholds recorded in ``bundle.json``, the card rendered as
``MODEL_CARD.md``.

The one writer of a bundle's manifest after export (``training.evaluate --update-card`` and ``--calibrate-review``,
``benchmarks/stress_3d.py --update-card``, ``benchmarks/second_simulator_3d.py --update-card``); weights and their
checksums are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_card(bundle_path: Path, evaluation: dict[str, Any], key: str = "evaluation") -> None:
    """Record an evaluation in bundle.json's model card under ``key`` (``evaluation``, ``stress_suite`` from
    ``benchmarks/stress_3d.py`` or ``second_simulator`` from ``benchmarks/second_simulator_3d.py``) and render the
    card as MODEL_CARD.md."""
    data = _read_manifest(bundle_path)
    data["model_card"][key] = evaluation
    _write_manifest(bundle_path, data)
    render_card(bundle_path)


def write_review_policy(bundle_path: Path, policy: dict[str, Any], tta: bool = False) -> None:
    """Replace the bundle's review thresholds (``ReviewPolicy.to_dict()``, from ``training.evaluate``): those
    for results made with flip test-time augmentation (``review_tta``) or without it (``review``); the card's
    review section follows."""
    data = _read_manifest(bundle_path)
    data["review_tta" if tta else "review"] = policy
    _write_manifest(bundle_path, data)
    render_card(bundle_path)


def _read_manifest(bundle_path: Path) -> dict[str, Any]:
    return dict(json.loads((bundle_path / "bundle.json").read_text(encoding="utf-8")))


def _write_manifest(bundle_path: Path, data: dict[str, Any]) -> None:
    from FetalHeadSegLib.core.atomic import write_text_atomic

    write_text_atomic(bundle_path / "bundle.json", json.dumps(data, indent=2) + "\n")


REVIEW_POLICIES = (
    ("review", "without test-time augmentation"),
    ("review_tta", "with flip test-time augmentation (--tta)"),
)
"""The bundle's review thresholds, by the kind of result they decide on."""


def _review_section(data: dict[str, Any]) -> list[str]:
    """The review thresholds and how they were calibrated, one paragraph per policy in the bundle."""
    lines = ["## Review flag (`review_recommended`)", ""]
    for key, results in REVIEW_POLICIES:
        policy = data.get(key)
        if not policy:
            continue
        calibration = policy.get("calibration") or {}
        limits = ", ".join(
            f"{name} {value}" for name, value in policy.items() if name != "calibration" and value is not None
        )
        lines.append(f"- Results made {results}: {limits or 'no threshold'}.")
        if calibration:
            counted = "the good" if calibration.get("budget_of") == "good" else "all"
            lines[-1] += (
                f" Calibrated on {calibration['cases']} cases, at most {calibration['max_flag_rate']:.0%} of {counted} "
                f"cases flagged: {calibration['flag_rate']:.1%} flagged, {calibration['recall']:.0%} of the "
                f"{calibration['bad_cases']} with {calibration.get('bad_means', 'a bad result')} caught, precision "
                f"{calibration['precision']:.0%}; data: {calibration.get('data', 'validation cases')}."
            )
            unseen = calibration.get("cross_validated")
            if unseen:
                lines[-1] += (
                    f" Cross-validated ({unseen['folds']} folds: each case decided by thresholds calibrated on the "
                    f"others): {unseen['flag_rate']:.1%} flagged, {unseen['recall']:.0%} caught, precision "
                    f"{unseen['precision']:.0%}."
                )
            if calibration.get("command"):
                lines[-1] += f" Command: `{calibration['command']}`."
        else:
            lines[-1] += " Not calibrated (the defaults)."
    if data.get("review") and not data.get("review_tta"):
        lines.append("- Results made with --tta use the same thresholds.")
    return lines + [""]


def _history_section(history: list[dict[str, str]]) -> list[str]:
    """The releases before this one and the experiments measured against it, newest first: what each changed, what
    it measured and the command that measured it. The card's paragraphs above describe the model as it is."""
    if not history:
        return []
    lines = ["## Release history", ""]
    for entry in history:
        lines.append(f"- **{entry['version']}.** {entry['notes']}")
    return lines + [""]


def render_card(bundle_path: Path) -> None:
    """MODEL_CARD.md from bundle.json's model card."""
    data = _read_manifest(bundle_path)
    card = data["model_card"]
    evaluation = card.get("evaluation", {})
    lines = [
        f"# {data['name']} (`{data['id']}` {data['version']})",
        "",
        f"{data['dimension']}D {data['task']} model, {len(data['networks'])} cascade level(s).",
        "",
    ]
    if data.get("tta_by_default"):
        lines += ["Runs with flip test-time augmentation unless told otherwise (`--no-tta`).", ""]
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
    lines += _review_section(data)
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
    second = card.get("second_simulator")
    if second:
        lines += [
            "## Second simulator (image-space phantoms, `FetalHeadSegLib.phantom.image_space`)",
            "",
            f"Command: `{second['command']}`",
            "",
            "```json",
            json.dumps(second["overall"], indent=2),
            "```",
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
    lines += _history_section(card.get("history", []))
    from FetalHeadSegLib.core.atomic import write_text_atomic

    write_text_atomic(bundle_path / "MODEL_CARD.md", "\n".join(lines))
