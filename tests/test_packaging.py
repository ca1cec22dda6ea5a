"""The built wheel is a working install: packages, package data, entry points, console script.

The repo maps ``engine/``, ``models/`` and ``connectors/`` into ``machinewatch.*`` through
setuptools ``package-dir`` with an explicit ``packages`` list, so a new subpackage that is not
listed silently goes missing from the wheel while the editable install keeps working. These
tests build the wheel from a copy of the working tree, install it into a fresh venv under tmp,
and import from there.

The fresh venv gets no dependencies of its own: a ``.pth`` file points it at the dev venv's
site-packages (where numpy, numba, ... are installed). Only that path is added; the dev venv's own
``.pth`` files (its editable finder for the repo) are not processed, and the fresh venv's
site-packages comes first on ``sys.path``, so ``machinewatch`` resolves to the installed copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"engine": "machinewatch/engine", "models": "machinewatch/models",
                "connectors": "machinewatch/connectors"}  # fmt: skip
_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    "tmp", "machinewatch-state", "*.nbi", "*.nbc",
)  # fmt: skip

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    python: Path
    site_packages: Path
    source: Path  # the copy of the working tree the wheel was built from


def _run(args: list[str | Path], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Wheel built from a copy of the tree and installed (``--no-deps``) into a fresh venv."""
    root = tmp_path_factory.mktemp("packaging")
    # Build from a copy: the build writes build/ and *.egg-info, and other work in the tree
    # (an editable reinstall, a second test run) must not race with it.
    source = root / "src"
    shutil.copytree(REPO, source, ignore=_IGNORE)
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet",
          "--disable-pip-version-check", "-w", wheels], cwd=source)  # fmt: skip
    [wheel] = wheels.glob("machinewatch-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--quiet",
          "--disable-pip-version-check", wheel], cwd=root)  # fmt: skip
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root
        ).stdout.strip()
    )
    (site / "_machinewatch_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return Installed(wheel=wheel, venv=venv, python=python, site_packages=site, source=source)


def _python_json(installed: Installed, code: str) -> object:
    """Run ``code`` in the fresh venv (isolated mode, cwd outside the repo); its last line is JSON."""
    out = _run([installed.python, "-I", "-c", textwrap.dedent(code)], cwd=installed.venv).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_packages_import_from_the_installed_copy(installed: Installed) -> None:
    files = _python_json(
        installed,
        """
        import json
        import machinewatch.connectors, machinewatch.engine, machinewatch.models
        print(json.dumps([m.__file__ for m in
              (machinewatch.engine, machinewatch.models, machinewatch.connectors)]))
        """,
    )
    assert isinstance(files, list)
    for name, file in zip(PACKAGE_DIRS.values(), files, strict=True):
        path = Path(file)
        assert path == installed.site_packages / name / "__init__.py", (name, file)
        assert REPO not in path.parents


def test_wheel_contains_every_module_of_the_tree(installed: Installed) -> None:
    """Every .py file and subpackage of engine/, models/, connectors/ is in the wheel."""
    with zipfile.ZipFile(installed.wheel) as whl:
        in_wheel = {n for n in whl.namelist() if n.endswith(".py")}
    expected = {
        f"{target}/{path.relative_to(installed.source / folder).as_posix()}"
        for folder, target in PACKAGE_DIRS.items()
        for path in (installed.source / folder).rglob("*.py")
    }
    missing = sorted(expected - in_wheel)
    assert not missing, (
        "modules missing from the wheel (add their package to [tool.setuptools] packages in "
        f"pyproject.toml): {missing}"
    )
    with zipfile.ZipFile(installed.wheel) as whl:
        assert "machinewatch/engine/py.typed" in whl.namelist()


def test_entry_points_are_registered(installed: Installed) -> None:
    groups = _python_json(
        installed,
        """
        import json
        from importlib.metadata import distribution
        eps = distribution("machinewatch").entry_points
        print(json.dumps({f"{ep.group}:{ep.name}": ep.value for ep in eps}))
        """,
    )
    assert isinstance(groups, dict)
    assert groups["console_scripts:machinewatch"] == "machinewatch.engine.cli:main"
    plugin_groups = {key.split(":")[0] for key in groups}
    assert {"machinewatch.sources", "machinewatch.sinks", "machinewatch.actuators",
            "machinewatch.models"} <= plugin_groups  # fmt: skip
    assert (installed.venv / "bin" / "machinewatch").is_file()


def test_console_script_runs(installed: Installed) -> None:
    if not (REPO / "engine" / "cli.py").exists():
        pytest.skip("engine/cli.py is not written yet; the entry point is checked above")
    result = _run([installed.venv / "bin" / "machinewatch", "--help"], cwd=installed.venv)
    assert "usage" in result.stdout.lower()
    assert "machinewatch" in result.stdout
