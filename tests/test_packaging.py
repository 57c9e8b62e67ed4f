"""Packaging facts a fresh install depends on: every import is a declared dependency,
and the torch pin is the same in pyproject.toml, the Makefile and the README."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _declared() -> dict[str, Requirement]:
    """Runtime requirements of the package, by normalised distribution name."""
    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    return {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in reqs}


def _imported_top_level() -> dict[str, Path]:
    """Top-level module names imported anywhere in ``smearscan/`` -> one file importing it."""
    found: dict[str, Path] = {}
    for path in sorted((REPO / "smearscan").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_third_party_import_is_a_declared_dependency() -> None:
    dists = packages_distributions()
    declared = _declared()
    missing = []
    for module, path in _imported_top_level().items():
        if module in sys.stdlib_module_names or module in ("smearscan", "__future__"):
            continue
        providers = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(module, [])}
        # dask's distributed scheduler comes with the dask[distributed] extra.
        if module == "distributed" and "dask" in declared:
            continue
        if not providers & declared.keys():
            missing.append(f"{module} (imported in {path.relative_to(REPO)}, from {providers})")
    assert not missing, f"imported but not in pyproject dependencies: {missing}"


def test_torch_pin_agrees_in_pyproject_makefile_and_readme() -> None:
    torch = _declared()["torch"]
    pins = [s.version for s in torch.specifier if s.operator == "=="]
    assert pins, f"pyproject.toml must pin torch exactly (found {torch})"
    makefile = re.search(r"^TORCH_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert makefile, "Makefile must set TORCH_VERSION"
    assert makefile.group(1) == pins[0]
    readme = (REPO / "README.md").read_text()
    mentioned = set(re.findall(r"torch(?:==| \(pinned )(\d+\.\d+\.\d+)", readme))
    assert mentioned == {pins[0]}, f"README names torch {mentioned}, pyproject pins {pins[0]}"
