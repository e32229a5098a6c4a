"""The models the panel offers: every installed bundle, described in one line, and the buttons that manage them.

Camel case where Qt's names rule (slots, widgets), as in the module file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _(text: str) -> str:
    """Slicer's translation of ``text``."""
    from slicer.i18n import tr

    return str(tr(text))


def model_descriptions() -> list[tuple[str, str]]:
    """(id, one-line description with the measured CPU time per case) of every installed model; a bundle that
    cannot be read says why."""
    from FetalHeadSegLib.core.errors import FetalHeadSegError
    from FetalHeadSegLib.models.bundle import read_bundle
    from FetalHeadSegLib.models.catalog import list_models

    descriptions = []
    for entry in list_models():
        try:
            bundle = read_bundle(entry.path)
        except FetalHeadSegError as err:
            descriptions.append((entry.id, _("Unreadable: {error}").format(error=err)))
            continue
        seconds = bundle.model_card.get("evaluation", {}).get("cpu_seconds_per_case", {}).get("mean")
        timing = _(", about {seconds:.0f} s per case on a 2-core CPU").format(seconds=seconds) if seconds else ""
        descriptions.append((entry.id, f"{bundle.name} {bundle.version} ({entry.dimension}D{timing})"))
    return descriptions


class ModelChooser:
    """The panel's model list and its buttons: import a bundle, delete the imported ones, open the models folder.

    The combo box is bound to the parameter node's ``modelId`` by hand: Slicer binds a ``str`` to a combo box only
    with a ``Choice``, whose connector clears the box and refills it with fixed items (``guiConnectors.py``,
    ``QComboBoxToStringableConnector``); this list changes when models are imported, and each item has a tooltip.

    Args:
        ui: the panel's widgets (``slicer.util.childWidgetVariables``).
        parameters: returns the current parameter node (or None).
    """

    def __init__(self, ui: Any, parameters: Callable[[], Any]) -> None:
        self.ui, self.parameters = ui, parameters
        ui.modelIdComboBox.connect("currentIndexChanged(int)", self._onIndexChanged)
        ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        ui.deleteModelsButton.connect("clicked(bool)", self.onDeleteModels)

    def populate(self) -> None:
        """Fill the list with the installed models (the first, empty item: the default for the input's dimension)."""
        import qt

        combo = self.ui.modelIdComboBox
        wasBlocked = combo.blockSignals(True)  # rebuilding the list is not a choice of the user
        try:
            combo.clear()
            combo.addItem("")
            for modelId, description in model_descriptions():
                combo.addItem(modelId)
                combo.setItemData(combo.count - 1, description, qt.Qt.ToolTipRole)
        finally:
            combo.blockSignals(wasBlocked)
        self.show()

    def show(self) -> None:
        """Show the parameter node's model (a model no longer installed shows the default)."""
        combo, parameters = self.ui.modelIdComboBox, self.parameters()
        index = max(combo.findText(parameters.modelId), 0) if parameters else 0
        if combo.currentIndex != index:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)

    def _onIndexChanged(self, index: int) -> None:
        parameters = self.parameters()
        if parameters is not None:
            parameters.modelId = self.ui.modelIdComboBox.currentText

    def onImportModel(self) -> None:
        import qt
        import slicer

        from FetalHeadSegLib.models.catalog import import_model

        with slicer.util.tryWithErrorDisplay(_("The model could not be imported."), waitCursor=True):
            path = qt.QFileDialog.getOpenFileName(None, _("Import a model"), "", _("Model bundles (*.zip bundle.json)"))
            if path:
                target = import_model(Path(path))
                self.ui.statusLabel.text = _("Imported the model into {folder}.").format(folder=target)
                self.populate()

    def onDeleteModels(self) -> None:
        import slicer

        from FetalHeadSegLib.models.catalog import remove_imported_models

        with slicer.util.tryWithErrorDisplay(_("The models could not be deleted."), waitCursor=True):
            if slicer.util.confirmOkCancelDisplay(
                _("Delete every imported model? The models bundled with the extension stay.")
            ):
                removed = remove_imported_models()
                self.ui.statusLabel.text = _("Deleted {count} imported model(s).").format(count=len(removed))
                self.populate()

    def onOpenModelsFolder(self) -> None:
        import qt

        from FetalHeadSegLib.models.catalog import model_home

        folder = model_home() / "models"
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))
