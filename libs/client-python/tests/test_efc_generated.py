"""The checked-in stubs and SQL match their sources, and the package builds with them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def test_stubs_and_schema_match_the_protos_and_migrations() -> None:
    check = subprocess.run([sys.executable, str(PACKAGE_ROOT / "generate.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_wheel_ships_stubs_and_schema(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources.
    source = tmp_path / "src"
    shutil.copytree(PACKAGE_ROOT, source, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("eventflow_client-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("eventflow_client/sql/0001_outbox.sql", "eventflow_client/sql/0002_processed.sql",
                 "eventflow_client/v1/subscriber_pb2_grpc.py", "eventflow_client/v1/cloudevent_pb2.pyi",
                 "eventflow_client/exactly_once.py"):
        assert want in names, f"{want} missing from {wheel.name}"
