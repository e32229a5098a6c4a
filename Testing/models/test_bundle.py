"""Model bundles and the catalog: checksums verified and refused, invalid bundles named, lookup by id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from FetalHeadSegLib.core.errors import BundleError, ChecksumError
from FetalHeadSegLib.models.bundle import load_networks, read_bundle, verify_bundle
from FetalHeadSegLib.models.catalog import default_model, find_model, import_model, list_models, remove_imported_models

from tiny_models import make_tiny_bundle


def test_written_bundle_reads_back_and_loads(tmp_path: Path) -> None:
    written = make_tiny_bundle(tmp_path / "model")
    bundle = read_bundle(tmp_path / "model")
    assert bundle.to_dict() == {**written.to_dict()}
    assert sorted(p.name for p in (tmp_path / "model" / "weights").iterdir()) == ["level0.pt", "level1.pt"]
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    networks = load_networks(bundle, torch.device("cpu"))
    assert len(networks) == 2 and not networks[0].training
    assert networks[1].config.in_channels == 2


def test_a_changed_weight_file_is_refused(tmp_path: Path) -> None:
    bundle = make_tiny_bundle(tmp_path / "model")
    weights = tmp_path / "model" / "weights" / "level1.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="level1.pt: SHA-256 mismatch"):
        verify_bundle(bundle)
    with pytest.raises(ChecksumError):
        load_networks(bundle, torch.device("cpu"))
    weights.unlink()
    with pytest.raises(ChecksumError, match="missing"):
        verify_bundle(bundle)


def test_invalid_bundles_are_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no bundle.json"):
        read_bundle(tmp_path)
    make_tiny_bundle(tmp_path / "model")
    manifest = tmp_path / "model" / "bundle.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99"):
        read_bundle(tmp_path / "model")
    manifest.write_text(json.dumps({**data, "networks": [{"channels": "wide"}]}))
    with pytest.raises(BundleError, match="invalid model description"):
        read_bundle(tmp_path / "model")
    manifest.write_text(json.dumps({**data, "tta_by_default": "false"}))  # bool("false") would be True
    with pytest.raises(BundleError, match="tta_by_default must be true or false, got 'false'"):
        read_bundle(tmp_path / "model")


def test_a_model_that_recommends_flips_says_so_in_its_manifest_and_card(tmp_path: Path) -> None:
    from FetalHeadSegLib.models.card import render_card

    make_tiny_bundle(tmp_path / "plain")
    data = json.loads((tmp_path / "plain" / "bundle.json").read_text())
    assert data["tta_by_default"] is False and not read_bundle(tmp_path / "plain").tta_by_default
    del data["tta_by_default"]  # a bundle written before the key existed
    (tmp_path / "plain" / "bundle.json").write_text(json.dumps(data))
    assert not read_bundle(tmp_path / "plain").tta_by_default
    make_tiny_bundle(tmp_path / "flips", tta_by_default=True)
    assert read_bundle(tmp_path / "flips").tta_by_default
    render_card(tmp_path / "flips")
    render_card(tmp_path / "plain")
    assert "unless told otherwise (`--no-tta`)" in (tmp_path / "flips" / "MODEL_CARD.md").read_text()
    assert "--no-tta" not in (tmp_path / "plain" / "MODEL_CARD.md").read_text()


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path: Path) -> None:
    make_tiny_bundle(tmp_path / "a", levels=1)
    other = make_tiny_bundle(tmp_path / "b", levels=1, dimension=2)
    manifest = tmp_path / "b" / "bundle.json"
    data = json.loads(manifest.read_text())
    data["networks"] = json.loads((tmp_path / "a" / "bundle.json").read_text())["networks"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="do not match"):
        load_networks(read_bundle(other.path), torch.device("cpu"))


def test_catalog_finds_user_models_by_id_and_version(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_tiny_bundle(home / "models" / "tiny", model_id="tiny-3d")
    assert [entry.id for entry in list_models(home) if entry.source == "user"] == ["tiny-3d"]
    assert find_model("tiny-3d", home).id == "tiny-3d"
    assert find_model("tiny-3d@0.0.1", home).version == "0.0.1"
    assert find_model(home / "models" / "tiny").id == "tiny-3d"
    with pytest.raises(BundleError, match="no model 'tiny-3d@9'"):
        find_model("tiny-3d@9", home)


def test_default_model_per_dimension_and_task(tmp_path: Path) -> None:
    """No shipped model segments 3D intrapartum volumes: a user model of that kind becomes the default."""
    home = tmp_path / "home"
    with pytest.raises(BundleError, match="no 3D intrapartum model is installed"):
        default_model(3, "intrapartum", home=home)
    make_tiny_bundle(home / "models" / "ip3d", model_id="tiny-3d-intrapartum", task="intrapartum")
    assert default_model(3, "intrapartum", home=home).id == "tiny-3d-intrapartum"


def test_models_are_imported_from_a_folder_its_manifest_or_a_zip(tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "home"
    source = make_tiny_bundle(tmp_path / "download" / "tiny", model_id="tiny-import").path
    archive = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", source.parent, "tiny"))
    for given in (source, source / "bundle.json", archive):
        target = import_model(given, home)
        assert target == home / "models" / "tiny-import-v0.0.1"
        verify_bundle(read_bundle(target))
        assert [e.id for e in list_models(home) if e.source == "user"] == ["tiny-import"]
    assert remove_imported_models(home) == [target]
    assert not target.exists() and all(e.source == "bundled" for e in list_models(home))


def test_a_damaged_or_foreign_import_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = make_tiny_bundle(tmp_path / "good", model_id="tiny-import").path
    installed = import_model(good, home)
    before = {p.name: p.read_bytes() for p in installed.rglob("*") if p.is_file()}
    damaged = make_tiny_bundle(tmp_path / "damaged", model_id="tiny-import").path
    weights = damaged / "weights" / "level0.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        import_model(damaged, home)
    (tmp_path / "not.zip").write_bytes(b"PK not really")
    with pytest.raises(BundleError, match="not a readable zip"):
        import_model(tmp_path / "not.zip", home)
    with pytest.raises(BundleError, match="no such file"):
        import_model(tmp_path / "missing", home)
    assert {p.name: p.read_bytes() for p in installed.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in (home / "models").iterdir()) == [installed.name]  # no staging left behind


def test_thresholds_for_tta_results_are_kept_apart_and_rendered_in_the_card(tmp_path: Path) -> None:
    """A bundle may carry review thresholds for results made with TTA; without them ``review`` decides both."""
    from FetalHeadSegLib.measure.review import ReviewPolicy
    from FetalHeadSegLib.models.card import render_card, write_review_policy

    make_tiny_bundle(tmp_path / "model")
    plain = read_bundle(tmp_path / "model")
    assert plain.review_tta is None and plain.review_policy(tta=True) is plain.review
    assert "review_tta" not in json.loads((tmp_path / "model" / "bundle.json").read_text())
    render_card(tmp_path / "model")
    assert "Results made with --tta use the same thresholds." in (tmp_path / "model" / "MODEL_CARD.md").read_text()

    calibration = {"max_flag_rate": 0.15, "budget_of": "all", "cases": 20, "bad_cases": 4, "flagged": 3}
    calibration |= {"flag_rate": 0.15, "recall": 0.5, "precision": 0.6667, "command": "python -m training.evaluate x"}
    calibration["cross_validated"] = {"folds": 5, "flag_rate": 0.2, "recall": 0.25, "precision": 0.25}
    tta_policy = ReviewPolicy(max_tta_disagreement=0.12, max_fit_residual=None, calibration=calibration)
    write_review_policy(tmp_path / "model", tta_policy.to_dict(), tta=True)
    bundle = read_bundle(tmp_path / "model")
    assert bundle.review == plain.review and bundle.review_tta == tta_policy
    assert bundle.review_policy(tta=True) == tta_policy and bundle.review_policy(tta=False) == plain.review
    assert read_bundle(tmp_path / "model").to_dict() == bundle.to_dict()
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert "- Results made with flip test-time augmentation (--tta): max_uncertain_band 0.08" in card
    assert "max_tta_disagreement 0.12" in card and "max_fit_residual" not in card.split("(--tta)")[1]
    assert "15.0% flagged, 50% of the 4 with a bad result caught, precision 67%" in card
    assert (
        "Cross-validated (5 folds: each case decided by thresholds calibrated on the others): 20.0% flagged, 25% "
        in card
    )
    assert "Command: `python -m training.evaluate x`." in card
