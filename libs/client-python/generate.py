"""Generates the checked-in parts of eventflow_client from their sources in this repository:

* eventflow_client/v1/: the Python gRPC stubs of proto/eventflow/v1 (grpcio-tools), with the
  generated `from eventflow.v1 import ...` rewritten to `from eventflow_client.v1 import ...`
  so the package needs no top-level `eventflow` package;
* eventflow_client/sql/: copies of libs/pg/migrations/*.sql (the outbox and processed tables),
  which `eventflow_client.ensure_schema` runs, so the package works without the Rust tools.

    python libs/client-python/generate.py          # regenerate after changing a .proto or a migration
    python libs/client-python/generate.py --check  # exit 1 if the checked-in files are stale

tests/test_efc_generated.py runs the check, so a change of the protos or the migrations that
forgot this step fails `make test`.
"""

from __future__ import annotations

import importlib.resources
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROTO_ROOT = REPO / "proto"
MIGRATIONS = REPO / "libs" / "pg" / "migrations"
PACKAGE = HERE / "eventflow_client"
# Generated import lines naming the proto package; rewritten to live under eventflow_client.
IMPORT = re.compile(r"^(from|import) eventflow\.v1\b", re.MULTILINE)


def generated() -> dict[str, bytes]:
    """Every generated file: path relative to eventflow_client -> content."""
    from grpc_tools import protoc

    files = sorted(PROTO_ROOT.glob("eventflow/v1/*.proto"))
    if not files:
        raise SystemExit(f"generate.py: no .proto files under {PROTO_ROOT}")
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wkt = importlib.resources.files("grpc_tools") / "_proto"
        args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{wkt}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *(str(f) for f in files)]
        if protoc.main(args) != 0:
            raise SystemExit("generate.py: protoc failed (see the messages above)")
        for path in sorted((Path(tmp) / "eventflow" / "v1").iterdir()):
            text = IMPORT.sub(r"\1 eventflow_client.v1", path.read_text())
            out[f"v1/{path.name}"] = text.encode()
    out["v1/__init__.py"] = b'"""Generated gRPC stubs of eventflow.v1 (see libs/client-python/generate.py)."""\n'
    for sql in sorted(MIGRATIONS.glob("000*.sql")):
        out[f"sql/{sql.name}"] = sql.read_bytes()
    return out


def stale() -> list[str]:
    """Files that differ from what generate.py would write (or should not be there)."""
    want = generated()
    have = {str(p.relative_to(PACKAGE)): p.read_bytes()
            for d in ("v1", "sql") if (PACKAGE / d).is_dir()
            for p in (PACKAGE / d).iterdir() if p.is_file()}
    return sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))


def write() -> None:
    files = generated()
    for d in ("v1", "sql"):
        shutil.rmtree(PACKAGE / d, ignore_errors=True)
    for rel, content in files.items():
        (PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        (PACKAGE / rel).write_bytes(content)


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        diff = stale()
        if diff:
            print("generate.py: stale files in eventflow_client (run python libs/client-python/generate.py):",
                  *diff, sep="\n  ")
            sys.exit(1)
        print("generate.py: eventflow_client is up to date")
    else:
        write()
        print(f"generate.py: wrote {PACKAGE}/v1 and {PACKAGE}/sql")
