"""Stand-ins for the parts of 3D Slicer that the slicer-core wheel lacks, written to follow Slicer's own rules.

Each rule below was read in Slicer's source (tag v5.10.0; the same in v5.8.1 and v5.12.0 unless noted):

- ``parameterNodeWrapper``: ``Base/Python/slicer/parameterNodeWrapper/wrapper.py`` resolves the class's hints with
  ``typing.get_type_hints(..., include_extras=True)`` (so string annotations work), ``connectGui`` finds the widgets
  of a ``childWidgetVariables`` object by their ``SlicerParameterName`` property, creates *every* connector before
  connecting any (one failure binds nothing), writes each parameter to its widget, and writes all of them again
  on every ModifiedEvent of the parameter node.
- ``guiConnectors.py``: ``createGuiConnector`` takes the first connector whose ``canRepresent`` is true and raises
  ``RuntimeError`` when none is. ``QComboBoxToStringableConnector`` represents ``QComboBox`` with ``int``, ``float``,
  ``str`` or ``bool``; its ``create`` raises unless the parameter has a ``Choice``, and its constructor clears the
  combo box and refills it with the choices. ``str`` without ``Choice`` binds only to ``QLineEdit``, ``QLabel`` or
  ``QTextEdit``; ``float`` to ``QDoubleSpinBox`` (range from ``WithinRange``); ``bool`` to ``QCheckBox``; a node type
  to ``qMRMLNodeComboBox`` (whose ``nodeTypes`` it sets).
- ``validators.py``: ``Choice`` and ``WithinRange`` raise ``ValueError`` for a value they do not allow.
- Qt: ``QComboBox`` emits ``currentIndexChanged`` when items are cleared, when the first item is added to an empty
  box and when the index changes (unless ``blockSignals``); ``QDoubleSpinBox`` clamps to its range.
- ``slicer.util.tryWithErrorDisplay`` shows the error and re-raises it (``Base/Python/slicer/util.py``).
- ``slicer.util.loadSegmentation`` and ``loadMarkups`` (``util.py``, read at main 583e9b3) call ``loadNodeFromFile``
  with the file types ``SegmentationFile`` and ``MarkupsFile``: the core IO manager runs the module's reader, and
  a failed read raises ``RuntimeError("Failed to load node from file: ...")``; the first loaded node is returned.
  ``qSlicerSegmentationsReader::load`` calls ``vtkSlicerSegmentationsModuleLogic::LoadSegmentationFromFile(file,
  autoOpacities (default true), name, colour node)``; ``qSlicerMarkupsReader::load`` calls
  ``vtkSlicerMarkupsLogic::LoadMarkups(file, name)``, which returns the loaded nodes' IDs joined by commas. Both
  logics run here as they are, from slicer-core. Slicer's application logic gives every scene a selection node
  (``vtkMRMLSelectionNodeSingleton``), which the markups logic needs.

The widgets are built from the module's real ``.ui`` file, so its bindings are what is tested.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import typing
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import vtk

SLICER_PARAMETER_NAME = "SlicerParameterName"


# --- Qt widgets -------------------------------------------------------------------------------------------------


class FakeWidget:
    """A widget of the .ui file: class name, object name, Qt properties, dynamic properties and string signals."""

    def __init__(self, className: str, name: str, properties: dict[str, Any]) -> None:  # noqa: N803 - Qt's names
        self.__dict__["_state"] = {"text": "", "toolTip": "", "enabled": True, "visible": True}
        self.__dict__["className"] = className
        self.__dict__["name"] = name
        self.__dict__["_dynamic"] = {}
        self.__dict__["_slots"] = {}
        self.__dict__["_blocked"] = False
        self.__dict__["children"] = []
        for key, value in properties.items():
            setattr(self, key, value)

    def __getattr__(self, key: str) -> Any:
        state = self.__dict__["_state"]
        if key in state:
            return state[key]
        raise AttributeError(f"{self.className} {self.name!r} has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if isinstance(getattr(type(self), key, None), property):
            object.__setattr__(self, key, value)
        else:
            self.__dict__["_state"][key] = value

    def property(self, key: str) -> Any:
        return self.__dict__["_dynamic"].get(key)

    def setProperty(self, key: str, value: Any) -> None:  # noqa: N802 - Qt's name
        self.__dict__["_dynamic"][key] = value

    def connect(self, signal: str, slot: Callable[..., Any]) -> None:
        self.__dict__["_slots"].setdefault(signal, []).append(slot)

    def disconnect(self, signal: str, slot: Callable[..., Any]) -> None:
        self.__dict__["_slots"].get(signal, []).remove(slot)

    def blockSignals(self, block: bool) -> bool:  # noqa: N802 - Qt's name
        previous = self.__dict__["_blocked"]
        self.__dict__["_blocked"] = bool(block)
        return previous

    def emit(self, signal: str, *args: Any) -> None:
        """Call each slot with the signal's arguments, or with as many as it takes (as PythonQt does)."""
        if self.__dict__["_blocked"]:
            return
        for slot in list(self.__dict__["_slots"].get(signal, [])):
            for count in range(len(args), -1, -1):
                try:
                    inspect.signature(slot).bind(*args[:count])
                except TypeError:
                    continue
                except ValueError:  # a builtin without a signature
                    pass
                slot(*args[:count])
                break

    def click(self) -> None:
        if self.enabled:
            self.emit("clicked(bool)", False)

    def isWidgetType(self) -> bool:  # noqa: N802 - Qt's name
        return True

    def setMRMLScene(self, scene: Any) -> None:  # noqa: N802 - Slicer's name
        self.__dict__["_state"]["mrmlScene"] = scene
        for child in self.children:
            if child.className == "qMRMLNodeComboBox":
                child.setMRMLScene(scene)

    def findChildren(self, kind: Any = None) -> list[FakeWidget]:  # noqa: N802 - Qt's name
        found: list[FakeWidget] = []
        for child in self.children:
            found += [child, *child.findChildren()]
        return found


class FakeComboBox(FakeWidget):
    """QComboBox: items with data, the current index, and Qt's currentIndexChanged emissions."""

    def __init__(self, className: str, name: str, properties: dict[str, Any]) -> None:  # noqa: N803
        super().__init__(className, name, properties)
        self.__dict__["_items"] = []
        self.__dict__["_index"] = -1

    @property
    def count(self) -> int:
        return len(self.__dict__["_items"])

    @property
    def currentIndex(self) -> int:  # noqa: N802 - Qt's name
        return self.__dict__["_index"]

    @currentIndex.setter
    def currentIndex(self, index: int) -> None:  # noqa: N802
        index = index if 0 <= index < self.count else -1
        if index != self.__dict__["_index"]:
            self.__dict__["_index"] = index
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentText(self) -> str:  # noqa: N802 - Qt's name
        return self.__dict__["_items"][self.currentIndex]["text"] if self.currentIndex >= 0 else ""

    def clear(self) -> None:
        had_items = bool(self.__dict__["_items"])
        self.__dict__["_items"] = []
        self.__dict__["_index"] = -1
        if had_items:
            self.emit("currentIndexChanged(int)", -1)

    def addItem(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.__dict__["_items"].append({"text": text, "data": {}})
        if self.count == 1:
            self.currentIndex = 0

    def setItemData(self, index: int, value: Any, role: Any) -> None:  # noqa: N802 - Qt's name
        self.__dict__["_items"][index]["data"][role] = value

    def itemData(self, index: int, role: Any) -> Any:  # noqa: N802 - Qt's name
        return self.__dict__["_items"][index]["data"].get(role)

    def itemText(self, index: int) -> str:  # noqa: N802 - Qt's name
        return self.__dict__["_items"][index]["text"]

    def findText(self, text: str) -> int:  # noqa: N802 - Qt's name
        texts = [item["text"] for item in self.__dict__["_items"]]
        return texts.index(text) if text in texts else -1


class FakeDoubleSpinBox(FakeWidget):
    """QDoubleSpinBox: the value is clamped to [minimum, maximum]; valueChanged(double) on a change."""

    def __init__(self, className: str, name: str, properties: dict[str, Any]) -> None:  # noqa: N803
        self.__dict__["_value"] = 0.0
        super().__init__(className, name, {"minimum": 0.0, "maximum": 99.99, **properties})

    @property
    def value(self) -> float:
        return self.__dict__["_value"]

    @value.setter
    def value(self, value: float) -> None:
        value = min(max(float(value), self.minimum), self.maximum)
        if value != self.__dict__["_value"]:
            self.__dict__["_value"] = value
            self.emit("valueChanged(double)", value)


class FakeCheckBox(FakeWidget):
    @property
    def checked(self) -> bool:
        return bool(self.__dict__["_state"].get("_checked", False))

    @checked.setter
    def checked(self, value: bool) -> None:
        if bool(value) != self.checked:
            self.__dict__["_state"]["_checked"] = bool(value)
            self.emit("toggled(bool)", bool(value))


class FakeNodeComboBox(FakeWidget):
    """qMRMLNodeComboBox: the current node of the scene, currentNodeChanged(vtkMRMLNode*) on a change."""

    def currentNode(self) -> Any:  # noqa: N802 - Slicer's name
        return self.__dict__["_state"].get("_node")

    def setCurrentNode(self, node: Any) -> None:  # noqa: N802 - Slicer's name
        if node is not self.currentNode():
            self.__dict__["_state"]["_node"] = node
            self.emit("currentNodeChanged(vtkMRMLNode*)", node)


class FakePlainTextEdit(FakeWidget):
    def appendPlainText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self.__dict__["_state"]["plainText"] = (self.toPlainText() + "\n" + text).lstrip("\n")

    def clear(self) -> None:
        self.__dict__["_state"]["plainText"] = ""

    def toPlainText(self) -> str:  # noqa: N802 - Qt's name
        return self.__dict__["_state"].get("plainText", "")


class FakeShow3DButton(FakeWidget):
    def setSegmentationNode(self, node: Any) -> None:  # noqa: N802 - Slicer's name
        self.__dict__["_state"]["segmentationNode"] = node


WIDGET_CLASSES: dict[str, type[FakeWidget]] = {
    "QComboBox": FakeComboBox,
    "ctkComboBox": FakeComboBox,
    "QDoubleSpinBox": FakeDoubleSpinBox,
    "QCheckBox": FakeCheckBox,
    "qMRMLNodeComboBox": FakeNodeComboBox,
    "QPlainTextEdit": FakePlainTextEdit,
    "qMRMLSegmentationShow3DButton": FakeShow3DButton,
}


def _value(element: ElementTree.Element) -> Any:
    kind = element[0]
    if kind.tag == "bool":
        return kind.text == "true"
    if kind.tag in ("number", "double"):
        return float(kind.text or 0) if kind.tag == "double" else int(kind.text or 0)
    if kind.tag == "stringlist":
        return [item.text for item in kind]
    return kind.text or ""


def _build(element: ElementTree.Element) -> FakeWidget:
    properties = {}
    dynamic = {}
    for item in element.findall("property"):
        if item.get("stdset") == "0":
            dynamic[item.get("name")] = _value(item)
        elif item.get("name") not in ("geometry", "sizeHint", "orientation"):
            properties[item.get("name")] = _value(item)
    className = element.get("class", "QWidget")
    widget = WIDGET_CLASSES.get(className, FakeWidget)(className, element.get("name", ""), properties)
    for key, value in dynamic.items():
        widget.setProperty(key, value)
    for child in element.iter("widget"):
        if child is not element and _parent_widget(element, child):
            widget.children.append(_build(child))
    return widget


def _parent_widget(parent: ElementTree.Element, child: ElementTree.Element) -> bool:
    """True when ``child`` is a direct widget child of ``parent`` (through layouts and items only)."""

    def search(node: ElementTree.Element) -> bool:
        for sub in node:
            if sub is child:
                return True
            if sub.tag in ("layout", "item") and search(sub):
                return True
        return False

    return search(parent)


def loadUI(path: str) -> FakeWidget:  # noqa: N802 - Slicer's name
    """slicer.util.loadUI: the .ui file's widget tree."""
    return _build(ElementTree.parse(path).getroot().find("widget"))  # type: ignore[arg-type]


def childWidgetVariables(widget: FakeWidget) -> Any:  # noqa: N802 - Slicer's name
    """slicer.util.childWidgetVariables: every named child as an attribute of a plain object."""
    ui = type("", (), {})()
    for child in widget.findChildren():
        if child.name:
            setattr(ui, child.name, child)
    return ui


# --- parameterNodeWrapper -----------------------------------------------------------------------------------------


class Choice:
    def __init__(self, choices: list[Any]) -> None:
        self.choices = list(choices)

    def validate(self, value: Any) -> None:
        if value not in self.choices:
            raise ValueError(f"Value '{value}' is not in choices {self.choices}")


class WithinRange:
    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value: Any) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value {value} is not within [{self.minimum}, {self.maximum}]")


def _split(hint: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *annotations = typing.get_args(hint)
        return base, list(annotations)
    return hint, []


def _first(annotations: list[Any], kind: type) -> Any:
    return next((a for a in annotations if isinstance(a, kind)), None)


def _is_node_type(base: Any) -> bool:
    return isinstance(base, type) and issubclass(base, vtk.vtkObject) and base.__name__.startswith("vtkMRML")


class _Connector:
    """One widget bound to one parameter: ``read`` the widget, ``write`` a value, call ``changed`` on edits."""

    def __init__(self, widget: FakeWidget, signal: str, read: Callable[[], Any], write: Callable[[Any], None]) -> None:
        self.widget, self.signal, self.read, self.write = widget, signal, read, write
        self._callback: Callable[[], None] | None = None

    def onChanged(self, callback: Callable[[], None] | None) -> None:  # noqa: N802 - Slicer's name
        if self._callback is not None:
            self.widget.disconnect(self.signal, self._slot)
        self._callback = callback
        if callback is not None:
            self.widget.connect(self.signal, self._slot)

    def _slot(self, *args: Any) -> None:
        if self._callback is not None:
            self._callback()


def createGuiConnector(widget: FakeWidget, hint: Any) -> _Connector:  # noqa: N802 - Slicer's name
    """The connector Slicer's ``createGuiConnector`` would create, or its RuntimeError."""
    base, annotations = _split(hint)
    kind = widget.className
    if base is bool and kind in ("QCheckBox", "ctkCheckBox"):
        return _Connector(widget, "toggled(bool)", lambda: widget.checked, lambda v: setattr(widget, "checked", v))
    if base in (float, int) and kind in ("QDoubleSpinBox", "ctkDoubleSpinBox", "ctkSliderWidget"):
        within = _first(annotations, WithinRange)
        widget.minimum = within.minimum if within else float("-inf")
        widget.maximum = within.maximum if within else float("inf")
        return _Connector(widget, "valueChanged(double)", lambda: widget.value, lambda v: setattr(widget, "value", v))
    if base in (int, float, str, bool) and kind in ("QComboBox", "ctkComboBox"):
        choice = _first(annotations, Choice)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        widget.clear()
        for value in choice.choices:
            widget.addItem(str(value))

        def write_choice(value: Any) -> None:
            if value not in choice.choices:
                raise ValueError(f"Unable to find value {value} in choices {choice.choices}")
            widget.currentIndex = choice.choices.index(value)

        return _Connector(widget, "currentIndexChanged(int)", lambda: choice.choices[widget.currentIndex], write_choice)
    if base is str and kind in ("QLineEdit", "QLabel", "QTextEdit"):
        return _Connector(widget, "textChanged(QString)", lambda: widget.text, lambda v: setattr(widget, "text", v))
    if _is_node_type(base) and kind == "qMRMLNodeComboBox":
        widget.nodeTypes = [base.__name__]
        return _Connector(widget, "currentNodeChanged(vtkMRMLNode*)", widget.currentNode, widget.setCurrentNode)
    raise RuntimeError(f"Unable to create GUI connector from datatype '{hint}' to widget type '{kind}'.")


def parameterNodeWrapper(cls: type) -> type:  # noqa: N802 - Slicer's name
    """A typed view of a vtkMRMLScriptedModuleNode, with Slicer's GUI binding rules."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name, None) for name in hints}

    def make_property(name: str) -> property:
        base, annotations = _split(hints[name])

        def get(self: Any) -> Any:
            node = self.parameterNode
            if _is_node_type(base):
                return node.GetNodeReference(name)
            if not node.GetParameter(name):
                return defaults[name]
            text = node.GetParameter(name)
            return text == "True" if base is bool else base(text)

        def set_(self: Any, value: Any) -> None:
            for validator in annotations:
                validator.validate(value)
            node = self.parameterNode
            if _is_node_type(base):
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            else:
                node.SetParameter(name, str(value))

        return property(get, set_)

    for name in hints:
        setattr(cls, name, make_property(name))

    def init(self: Any, parameterNode: Any) -> None:  # noqa: N803 - Slicer's name
        self.parameterNode = parameterNode
        self._guis: dict[int, dict[str, _Connector]] = {}
        self._updating = False

    def connect_gui(self: Any, gui: Any) -> int:
        widgets = {
            w.property(SLICER_PARAMETER_NAME): w for w in gui.__dict__.values() if w.property(SLICER_PARAMETER_NAME)
        }
        for parameter in widgets:
            if parameter not in hints:
                raise ValueError(f"Parameter '{parameter}' is not in {cls.__name__}")
        connectors = {parameter: createGuiConnector(widget, hints[parameter]) for parameter, widget in widgets.items()}
        tag = len(self._guis) + 1
        self._guis[tag] = connectors
        for parameter, connector in connectors.items():
            connector.write(getattr(self, parameter))

            def to_parameter(parameter: str = parameter, connector: _Connector = connector) -> None:
                if not self._updating:
                    setattr(self, parameter, connector.read())

            connector.onChanged(to_parameter)
        self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: update_gui(self))
        return tag

    def update_gui(self: Any) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            for connectors in self._guis.values():
                for parameter, connector in connectors.items():
                    connector.write(getattr(self, parameter))
        finally:
            self._updating = False

    def disconnect_gui(self: Any, tag: int) -> None:
        for connector in self._guis.pop(tag, {}).values():
            connector.onChanged(None)

    cls.__init__ = init  # type: ignore[misc]
    cls.connectGui = connect_gui  # type: ignore[attr-defined]
    cls.disconnectGui = disconnect_gui  # type: ignore[attr-defined]
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(  # type: ignore[attr-defined]
        event, callback, priority
    )
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)  # type: ignore[attr-defined]
    cls.Modified = lambda self: self.parameterNode.Modified()  # type: ignore[attr-defined]
    return cls


# --- slicer.util.tryWithErrorDisplay --------------------------------------------------------------------------------


def try_with_error_display(errors: list[str]) -> Callable[..., Any]:
    """slicer.util.tryWithErrorDisplay: records the dialog's text, then re-raises as Slicer does."""

    @contextlib.contextmanager
    def display(message: str | None = None, show: bool = True, waitCursor: bool = False) -> Iterator[None]:  # noqa: N803
        try:
            yield
        except Exception as err:
            if show:
                errors.append(f"{message}\n\n{err}" if message else str(err))
            raise

    return display


# --- the worker's output, as Slicer's event loop sees it ----------------------------------------------------------


def late_reader(hold: threading.Event) -> Callable[[Any, Any, str], None]:
    """A ``WorkerProcess._read`` that delivers nothing until ``hold`` is set.

    In Slicer the reader threads run only when the main thread gives up the GIL in Python code (Qt's event loop
    does not release it), so a worker can exit before its last lines are queued. This makes that order certain.
    """

    def read(self: Any, stream: Any, name: str) -> None:
        lines = [line.rstrip("\n") for line in stream]  # the pipe is drained as the OS allows ...
        hold.wait(60)  # ... but the lines reach the queue only when this thread runs again
        for line in lines:
            self._lines.put((name, line))
        self._lines.put((name, "\0eof"))

    return read


# --- slicer.util's file loaders -----------------------------------------------------------------------------------


def add_selection_node(scene: Any) -> None:
    """The selection node Slicer's application logic adds to every scene (vtkMRMLApplicationLogic::SetMRMLScene)."""
    import slicer

    if scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is None:
        selection = slicer.vtkMRMLSelectionNode()
        selection.SetSingletonTag("Singleton")
        scene.AddNode(selection)


def loaders(scene: Any) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """``slicer.util.loadSegmentation`` and ``slicer.util.loadMarkups`` as Slicer runs them, loading into ``scene``."""
    import slicer

    add_selection_node(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)

    def load_segmentation(filename: Any, properties: dict[str, Any] | None = None) -> Any:  # noqa: B006
        properties = properties or {}
        color = scene.GetNodeByID(properties["colorNodeID"]) if "colorNodeID" in properties else None
        name = str(properties.get("name", ""))
        node = segmentations.LoadSegmentationFromFile(
            str(filename), bool(properties.get("autoOpacities", True)), name, color
        )
        if node is None:
            raise RuntimeError(f"Failed to load node from file: {filename}")
        return node

    def load_markups(filename: Any) -> Any:
        ids = markups.LoadMarkups(str(filename), "")
        if not ids:
            raise RuntimeError(f"Failed to load node from file: {filename}")
        return scene.GetNodeByID(ids.split(",")[0])

    return load_segmentation, load_markups


# --- volumes from arrays --------------------------------------------------------------------------------------------


def vtk_image(array_xyz: np.ndarray) -> Any:
    """vtkImageData of an (X, Y, Z) array (VTK's scalars run x fastest)."""
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(*array_xyz.shape)
    flat = np.ascontiguousarray(array_xyz.transpose(2, 1, 0)).ravel()
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=True))
    return image


def vtk_matrix(matrix: np.ndarray) -> Any:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result
