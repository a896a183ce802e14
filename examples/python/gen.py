"""Generates the Python gRPC stubs of proto/ into examples/python/eventflow/ (gitignored).

    python examples/python/gen.py           # regenerate when the .proto files changed
    python examples/python/gen.py --force   # regenerate unconditionally

The generated package is importable as `eventflow.v1` with examples/python on sys.path;
efclient.py calls ensure() on import, so the demo and the tests never run on stale stubs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT_PACKAGE = HERE / "eventflow"
STAMP = OUT_PACKAGE / ".proto.sha256"


def _proto_files() -> list[Path]:
    files = sorted(PROTO_ROOT.glob("eventflow/**/*.proto"))
    if not files:
        raise SystemExit(f"gen.py: no .proto files under {PROTO_ROOT}")
    return files


def _fingerprint(files: list[Path]) -> str:
    """Hash of every .proto (path and content) and of the grpc_tools version used."""
    from grpc_tools.grpc_version import VERSION

    digest = hashlib.sha256(VERSION.encode())
    for f in files:
        digest.update(str(f.relative_to(PROTO_ROOT)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def generate(force: bool = False) -> bool:
    """(Re)generates the stubs if needed; returns True when it generated."""
    from grpc_tools import protoc

    files = _proto_files()
    fingerprint = _fingerprint(files)
    if not force and STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return False
    shutil.rmtree(OUT_PACKAGE, ignore_errors=True)
    # grpc_tools ships the well-known types (google/protobuf/*.proto) in its _proto dir.
    wkt = importlib.resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt}",
        f"--python_out={HERE}",
        f"--pyi_out={HERE}",
        f"--grpc_python_out={HERE}",
        *(str(f) for f in files),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("gen.py: protoc failed (see the messages above)")
    for package in {OUT_PACKAGE, *(HERE / f.relative_to(PROTO_ROOT).parent for f in files)}:
        (package / "__init__.py").touch()
    STAMP.write_text(fingerprint + "\n")
    return True


def ensure() -> None:
    """Makes sure up-to-date stubs exist and examples/python is importable."""
    generate()
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


if __name__ == "__main__":
    generated = generate(force="--force" in sys.argv[1:])
    print(f"gen.py: stubs {'generated' if generated else 'up to date'} in {OUT_PACKAGE}")
