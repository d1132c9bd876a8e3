"""The API's compatibility rule, checked by buf against the descriptor image of the last release.

`make api-check` (part of `make test`) runs the same check on the tree; these tests show that it
passes on an additive change and fails, naming what broke, on a breaking one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"
RELEASE = ROOT / "proto" / "released" / "candor-api-v1.binpb"
GATEWAY = Path("candor/gateway/v1/gateway.proto")


def breaking(proto_dir: Path) -> list[dict[str, object]]:
    """What buf finds breaking in proto_dir against the last release (empty when compatible)."""
    assert BUF.exists(), "buf is not installed: run `make test` (it runs npm ci in tools/buf)"
    run = subprocess.run(
        [str(BUF), "breaking", "--against", str(RELEASE), "--error-format", "json"],
        cwd=proto_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if run.returncode == 0:
        return []
    assert run.returncode == 100, f"buf failed for another reason: {run.stderr or run.stdout}"
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


@pytest.fixture
def proto_copy(tmp_path: Path) -> Path:
    """A copy of proto/ to change."""
    copy = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", copy, ignore=shutil.ignore_patterns("released"))
    return copy


def edit(proto_dir: Path, old: str, new: str) -> None:
    """Replace old (which must occur once) with new in the gateway's proto."""
    path = proto_dir / GATEWAY
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))


def test_the_tree_is_compatible_with_the_last_release() -> None:
    assert breaking(ROOT / "proto") == []


def test_an_added_field_and_rpc_are_compatible(proto_copy: Path) -> None:
    edit(proto_copy, "  string client_request_id = 7;\n", "  string client_request_id = 7;\n  string note = 99;\n")
    edit(
        proto_copy,
        "service GatewayService {\n",
        "service GatewayService {\n  rpc Ping(SearchRequest) returns (SearchRequest);\n",
    )
    assert breaking(proto_copy) == []


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        # A client still sending field 7 would have it ignored: a retry would search twice.
        ("  string client_request_id = 7;\n", "  reserved 7;\n", "FIELD_NO_DELETE"),
        ("  string client_request_id = 7;\n", "  int64 client_request_id = 7;\n", "FIELD_SAME_TYPE"),
        ("  string client_request_id = 7;\n", "  string client_request_id = 8;\n", "FIELD_NO_DELETE"),
        ("  string client_request_id = 7;\n", "  string request_id = 7;\n", "FIELD_SAME_NAME"),
        ("  rpc Search(", "  rpc FindFaces(", "RPC_NO_DELETE"),
    ],
    ids=["field deleted", "type changed", "number changed", "field renamed", "rpc renamed"],
)
def test_a_breaking_change_fails_and_names_what_broke(proto_copy: Path, old: str, new: str, rule: str) -> None:
    found = breaking(proto_copy)
    assert found == [], "the copy should start compatible"
    edit(proto_copy, old, new)
    found = breaking(proto_copy)
    assert rule in {f["type"] for f in found}, found
    assert all(f["path"] == str(GATEWAY) for f in found)
