"""What the panel shows of a run: the progress bar, the status line and the log, from the worker's events."""

from __future__ import annotations

from typing import Any

from FetalHeadSegSlicer.logic import Event, done_message


def show_event(ui: Any, event: Event) -> str | None:
    """Show one event in the panel's widgets; returns the closing status line when the run is over (the results
    were imported, or the run failed), None while it goes on."""
    from slicer.i18n import tr as _

    kind = event.get("event")
    if kind == "progress":
        ui.progressBar.value = int(100 * float(event.get("fraction", 0.0)))
        ui.statusLabel.text = f"{event.get('stage')}: {event.get('message', '')}"
        return None
    ui.logTextEdit.appendPlainText(event.get("message", "") if kind == "log" else str(event))
    if kind == "imported":
        return done_message(event)
    if kind == "failed":
        return _("Failed: {message}").format(message=event.get("message", ""))
    return None


def forget_helper_packages(modules: dict[str, Any]) -> None:
    """Forget FetalHeadSegLib and FetalHeadSegSlicer (Reload): not reloaded one by one, since any fixed order leaves
    some module with another's old classes (e.g. a BundleError that ``except`` no longer matches); the module's
    lazy imports then load fresh, consistent copies."""
    for name in [name for name in modules if name.split(".")[0] in ("FetalHeadSegLib", "FetalHeadSegSlicer")]:
        del modules[name]
