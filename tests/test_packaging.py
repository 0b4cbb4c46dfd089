"""What a runtime install holds: no monai (only the tests compare with it), the schema as package data."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK_MONAI = '''
import importlib.abc, pkgutil, sys

class NoMonai(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "monai" or name.startswith("monai."):
            raise ImportError(f"{name}: not installed at runtime")

sys.meta_path.insert(0, NoMonai())
import advseg
for module in pkgutil.walk_packages(advseg.__path__, "advseg."):
    __import__(module.name)
print("imported", len(sys.modules))
'''


def names(lock: Path) -> set[str]:
    return {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() for line in lock.read_text().splitlines()
            if "==" in line and not line.startswith("#")}


def test_every_module_imports_without_monai():
    result = subprocess.run([sys.executable, "-c", BLOCK_MONAI], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_monai_is_in_the_test_extra_and_its_lock_only():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [dependency for dependency in project["dependencies"] if dependency.startswith("monai")]
    assert "monai==1.6.1" in project["optional-dependencies"]["test"]
    runtime, test = names(REPO / "requirements.lock"), names(REPO / "requirements-test.lock")
    assert not {"monai", "pytest", "pytest-xdist"} & runtime
    assert {"monai", "pytest", "pytest-xdist"} <= test and not runtime & test, "the test lock adds, never repins"
    assert "-r requirements.lock" in (REPO / "requirements-test.lock").read_text().splitlines()


def test_the_schema_ships_with_the_package():
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "config.schema.yaml" in package_data["advseg"]
