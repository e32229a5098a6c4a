"""Dependencies on the first Apply: torch through the PyTorch extension, the rest from requirements.txt.

Never at import time, never torch through pip directly, never the packages Slicer ships (numpy, scipy, SimpleITK).
Nothing here imports torch: the Slicer process only checks its installed version (the worker imports it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

TORCH_REQUIREMENT = ">=2.2"  # the library's minimum (pyproject.toml)


class InstallError(Exception):
    """A dependency could not be set up; ``restart_required`` when Slicer must restart to finish."""

    def __init__(self, message: str, restart_required: bool = False) -> None:
        super().__init__(message)
        self.restart_required = restart_required


def installed_version(name: str) -> str | None:
    """The installed version of the distribution ``name`` (its metadata only: nothing is imported), or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _satisfied(name: str, specifier: str) -> bool:
    from packaging.specifiers import SpecifierSet

    found = installed_version(name)
    return found is not None and SpecifierSet(specifier).contains(found, prereleases=True)


def ensure_torch(interactive: bool = True) -> None:
    """Make torch (>= 2.2) installed through PyTorchUtils (which matches the CUDA build to the driver).

    Raises:
        InstallError: the PyTorch extension is missing, the user declined, the installation failed (offline, pip
            error), or a restart is needed.
    """
    if _satisfied("torch", TORCH_REQUIREMENT):
        return
    try:
        import PyTorchUtils  # type: ignore[import-not-found]
    except ImportError as err:
        raise InstallError(
            "FetalHeadSeg needs the PyTorch extension: install 'PyTorch' from the Extensions Manager "
            "and restart Slicer.",
            restart_required=False,
        ) from err
    try:
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=interactive, torchVersionRequirement=TORCH_REQUIREMENT
        )
    except Exception as err:  # pip's CalledProcessError, or anything else PyTorchUtils raises
        raise InstallError(f"Installing PyTorch failed ({err}). Check the internet connection and try again.") from err
    if torch is None:
        raise InstallError("PyTorch was not installed; FetalHeadSeg cannot segment without it.")
    if not _satisfied("torch", TORCH_REQUIREMENT):
        raise InstallError("PyTorch was installed but can only be used after Slicer restarts.", restart_required=True)


def ensure_requirements(requirements: Path, interactive: bool = True) -> None:
    """Install the missing packages of ``requirements`` after one confirmation.

    Slicer >= 5.12 has ``slicer.packaging.pip_ensure`` (it asks, installs and offers a restart itself); older
    versions get the same steps here with ``slicer.util.pip_install``.

    Raises:
        InstallError: the user declined, or the installation failed (offline, no matching version).
    """
    import slicer

    try:
        import slicer.packaging as packaging  # not imported by slicer/__init__.py; absent before 5.12
    except ImportError:
        packaging = None
    try:
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(
                packaging.load_requirements(str(requirements)),
                prompt_install=interactive,
                requester="FetalHeadSeg",
                skip_in_testing=False,  # the module's self-test needs scikit-image like a first Apply does
            )
            return
        missing = _missing(requirements)
        if not missing:
            return
        if interactive and not slicer.util.confirmOkCancelDisplay(
            "FetalHeadSeg needs these Python packages, which will be installed now:\n\n" + "\n".join(missing)
        ):
            raise InstallError("The required Python packages were not installed.")
        slicer.util.pip_install(missing)
    except InstallError:
        raise
    except Exception as err:  # pip's CalledProcessError; pip_ensure's RuntimeError when the user declines
        raise InstallError(f"The required Python packages were not installed ({err}).") from err


def _missing(requirements: Path) -> list[str]:
    from packaging.requirements import Requirement

    missing = []
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not _satisfied(Requirement(line).name, str(Requirement(line).specifier)):
            missing.append(line)
    return missing


def install_or_explain(setup: Callable[[], None], restart_question: str) -> str | None:
    """Run ``setup`` (the Logic's ``setupPythonRequirements``); None when it succeeds, else the reason, after a
    dialog: an error, or ``restart_question`` (formatted with ``message``) when a restart would finish the job.
    """
    import slicer

    try:
        setup()
    except InstallError as err:
        if not err.restart_required:
            slicer.util.errorDisplay(str(err))
        elif slicer.util.confirmOkCancelDisplay(restart_question.format(message=err)):
            slicer.util.restart()
        return str(err)
    return None
