"""Static checks of the Slicer extension (no Slicer needed): CMake lists every file, catalog entry and
requirements are valid, the module file is import-light, and the .ui loads with every widget the code uses."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE = REPOSITORY / "FetalHeadSeg"
LIBRARY = REPOSITORY / "FetalHeadSegLib"


def cmake_list(cmake: Path, variable: str) -> set[str]:
    text = cmake.read_text()
    match = re.search(rf"set\({variable}\n(.*?)\n\s*\)", text, re.S)
    assert match, f"{cmake}: no set({variable} ...)"
    return {
        line.strip().replace("${MODULE_NAME}", cmake.parent.name)
        for line in match.group(1).splitlines()
        if line.strip()
    }


def packaged_files(folder: Path) -> tuple[set[str], set[str]]:
    files = [
        p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"
    ]
    scripts = {str(p.relative_to(folder)) for p in files if p.suffix == ".py"}
    resources = {str(p.relative_to(folder)) for p in files if p.suffix != ".py"}
    return scripts, resources


@pytest.mark.parametrize("folder", [MODULE, LIBRARY], ids=["module", "library"])
def test_every_file_is_listed_in_cmake_and_every_listed_file_exists(folder: Path) -> None:
    scripts, resources = packaged_files(folder)
    listed_scripts = cmake_list(folder / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS")
    listed_resources = cmake_list(folder / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES")
    assert listed_scripts == scripts, "CMake and the folder differ (regenerate the list in CMakeLists.txt)"
    assert listed_resources == resources, "CMake and the folder differ (regenerate the list in CMakeLists.txt)"


def test_extension_metadata_and_catalog_entry() -> None:
    cmake = (REPOSITORY / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(FetalHeadSeg\)", cmake, re.M)
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', cmake).group(1).split(";")
    entry = json.loads((REPOSITORY / "FetalHeadSeg.json").read_text())
    schema = json.loads(
        (Path(__file__).parents[1] / "data" / "slicer-extension-catalog-entry-schema-v1.0.2.json").read_text()
    )
    jsonschema.validate(entry, schema)
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({key} "[^"]+"\)', cmake), key
    assert "Requires 3D Slicer 5.10 or later" in re.search(r'set\(EXTENSION_DESCRIPTION "([^"]+)"\)', cmake).group(1)
    assert "WITH_SUBDIR" in (LIBRARY / "CMakeLists.txt").read_text()
    module_cmake = (MODULE / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in module_cmake and "slicer_add_python_unittest" in module_cmake
    for picture in ("FetalHeadSeg.png", "Screenshots/results.png", "LICENSE"):
        assert (REPOSITORY / picture).exists(), picture


def test_requirements_are_minimums_and_never_bundled_packages() -> None:
    from packaging.requirements import Requirement

    lines = [
        line.split("#")[0].strip() for line in (MODULE / "Resources" / "requirements.txt").read_text().splitlines()
    ]
    requirements = [Requirement(line) for line in lines if line]
    assert requirements
    for requirement in requirements:
        assert requirement.name.lower() not in {"numpy", "scipy", "simpleitk", "torch", "requests"}
        assert all(spec.operator == ">=" for spec in requirement.specifier), requirement


def test_module_file_is_import_light_and_has_a_self_test() -> None:
    tree = ast.parse((MODULE / "FetalHeadSeg.py").read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    allowed = {"__future__", "hashlib", "logging", "os", "shutil", "sys", "pathlib", "typing", "qt", "slicer", "vtk"}
    assert top_level <= allowed
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {"FetalHeadSeg", "FetalHeadSegWidget", "FetalHeadSegLogic", "FetalHeadSegTest"} <= set(classes)
    assert "testLogic" not in (MODULE / "FetalHeadSeg.py").read_text()


def parameter_fields() -> dict[str, str]:
    """Each parameter of the parameter node and its annotation's source text."""
    tree = ast.parse((MODULE / "FetalHeadSeg.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FetalHeadSegParameterNode")
    return {item.target.id: ast.unparse(item.annotation) for item in node.body if isinstance(item, ast.AnnAssign)}


def test_ui_loads_with_every_widget_and_parameter_binding() -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qt_widgets = pytest.importorskip("PySide6.QtWidgets")
    from PySide6.QtCore import QFile, qInstallMessageHandler
    from PySide6.QtUiTools import QUiLoader

    application = qt_widgets.QApplication.instance() or qt_widgets.QApplication([])
    messages: list[str] = []
    qInstallMessageHandler(lambda kind, context, message: messages.append(message))
    ui_path = MODULE / "Resources" / "UI" / "FetalHeadSeg.ui"
    ui_file = QFile(str(ui_path))
    assert ui_file.open(QFile.ReadOnly)
    root = QUiLoader().load(ui_file)
    ui_file.close()
    qInstallMessageHandler(None)
    assert root is not None and application is not None
    assert not [m for m in messages if "unable to create a widget" in m.lower()], messages
    code = "".join(
        path.read_text() for path in [MODULE / "FetalHeadSeg.py", *(MODULE / "FetalHeadSegSlicer").glob("*.py")]
    )
    used = set(re.findall(r"\bui\.(\w+)", code))  # the widget's and its helpers' (e.g. models.ModelChooser)
    assert {"applyButton", "modelIdComboBox", "importModelButton"} <= used
    names = {widget.objectName() for widget in root.findChildren(qt_widgets.QWidget)}
    assert used <= names, f"widgets used by the code but missing from the .ui: {sorted(used - names)}"
    bound = {
        w.property("SlicerParameterName"): w.metaObject().className()
        for w in root.findChildren(qt_widgets.QWidget)
        if w.property("SlicerParameterName")
    }
    fields = parameter_fields()
    # modelId is synced by hand: its list of models changes, and Slicer binds a str to a combo box only with a
    # Choice, whose connector clears the box and refills it with the fixed choices (guiConnectors.py).
    assert set(bound) == set(fields) - {"modelId"}
    for parameter, widget_class in bound.items():
        if widget_class in ("QComboBox", "ctkComboBox"):
            assert "Choice(" in fields[parameter], f"{parameter}: a combo box binds only to a Choice or an Enum"
    text = ui_path.read_text()
    declared = set(re.findall(r"<customwidget><class>(\w+)</class><extends>\w+</extends>", text))
    custom = {c for c in re.findall(r'class="(\w+)"', text) if c.startswith(("qMRML", "ctk", "qSlicer"))}
    assert custom <= declared
