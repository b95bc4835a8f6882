"""The wheel users install: built once here (without build isolation, so offline and in about a
second), then read as a zip. .ci/run also builds the sdist and runs ``twine check`` on both."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13", "3.14")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("workflows_async-*.whl")
    return zipfile.ZipFile(path)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (member,) = [n for n in wheel.namelist() if n.split("/")[0].endswith(".dist-info")
                 and n.split("/", 1)[1] == name]  # fmt: skip
    return wheel.read(member).decode()


def metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(dist_info(wheel, "METADATA"))


def test_the_wheel_has_the_package_its_type_marker_and_the_license(
    wheel: zipfile.ZipFile,
) -> None:
    names = set(wheel.namelist())
    assert "workflows_async/py.typed" in names
    assert "workflows_async/testing/plugin.py" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    license_text = dist_info(wheel, "licenses/LICENSE")
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")


def test_metadata_names_the_license_and_every_supported_python(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    assert meta["Name"] == "workflows-async"
    assert meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier") or []
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers


def test_entry_points_name_the_command_and_the_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    text = dist_info(wheel, "entry_points.txt")
    assert "workflows-async = workflows_async.cli:main" in text
    assert "[pytest11]" in text and "workflows_async.testing.plugin" in text


def test_the_dev_extra_does_not_cap_aiohttp_below_what_users_get() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for requirement in map(Requirement, project["optional-dependencies"]["dev"]):
        if requirement.name == "aiohttp":
            assert all(spec.operator in (">=", ">") for spec in requirement.specifier)
