"""Property: every mutation of a sealed journal or bundle is rejected.

Mutations: a flipped byte anywhere, a line dropped, duplicated or swapped,
truncation at any byte, a file removed or added; bundles are checked both as
a folder and as a zip (and a zip cut at any byte).
"""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.bundle import FILES, export_bundle, verify_bundle
from agent.devicekey import DeviceKey
from agent.home import Home
from agent.journal import Journal, verify_journal

SETTINGS = settings(max_examples=120, deadline=None)


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A sealed session's journal bytes, its bundle's files, the key's blob."""
    home = Home(tmp_path_factory.mktemp("mut") / "home")
    key, _ = DeviceKey.init(home)
    with Journal.create(home.journal_path("s-m"), "s-m", key) as j:
        j.append("request", {"technician": "Bob", "org": "ACME", "ticket": "T-1", "reason": "printer"})
        for i in range(6):
            j.append("file", {"op": "modified", "path": f"/etc/app/{i}.conf", "kind": "file", "size": i,
                              "sha256_after": f"{i:064x}"})
        j.checkpoint()
        j.append("note", {"author": "bob", "text": "done ✓"})
        j.seal({"reason": "technician"})
    folder = export_bundle(home, "s-m", f"{home.path.parent}/bundle/")
    files = {name: (folder / name).read_bytes() for name in FILES}
    return files["session.jsonl"], files, key.public_blob


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` with one mutation applied (always a real change)."""
    lines = _lines(data)
    kind = draw(st.sampled_from(["flip", "drop", "duplicate", "swap", "truncate", "insert"]))
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        bit = draw(st.integers(1, 255))
        out = data[:at] + bytes([data[at] ^ bit]) + data[at + 1:]
    elif kind == "truncate":
        out = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "drop" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        out = b"".join(lines[:i] + lines[i + 1:])
    elif kind == "duplicate" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        j = draw(st.integers(0, len(lines)))
        out = b"".join(lines[:j] + [lines[i]] + lines[j:])
    elif kind == "swap" and len(lines) > 1:
        i, j = sorted(draw(st.lists(st.integers(0, len(lines) - 1), min_size=2, max_size=2, unique=True)))
        swapped = lines[:i] + [lines[j]] + lines[i + 1:j] + [lines[i]] + lines[j + 1:]
        out = b"".join(swapped)
    else:
        at = draw(st.integers(0, len(lines)))
        out = b"".join(lines[:at] + [draw(st.binary(min_size=1, max_size=80))] + lines[at:])
    assume(out != data)
    return out


@SETTINGS
@given(data=st.data())
def test_every_journal_mutation_is_rejected(sealed, data):
    journal, _, key_blob = sealed
    assert verify_journal(io.BytesIO(journal), key_blob).ok
    bad = data.draw(mutated(journal))
    assert not verify_journal(io.BytesIO(bad), key_blob).ok
    assert not verify_journal(io.BytesIO(bad)).ok


def _write(files: dict[str, bytes], as_zip: bool, where: Path) -> Path:
    if as_zip:
        out = where / "b.zip"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, content in files.items():
                zf.writestr(name, content)
        return out
    out = where / "b"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out


@SETTINGS
@given(data=st.data(), as_zip=st.booleans())
def test_every_bundle_mutation_is_rejected(sealed, data, as_zip):
    _, files, _ = sealed
    files = dict(files)
    action = data.draw(st.sampled_from(["content", "remove", "add"]))
    if action == "content":
        name = data.draw(st.sampled_from(FILES))
        files[name] = data.draw(mutated(files[name]))
    elif action == "remove":
        del files[data.draw(st.sampled_from(FILES))]
    else:
        name = data.draw(st.sampled_from(["extra.txt", "session.jsonl.torn-1", "README", "SHA256SUMS.asc"]))
        files[name] = data.draw(st.binary(max_size=40))
    where = Path(tempfile.mkdtemp())
    try:
        verdict = verify_bundle(_write(files, as_zip, where))
        assert not verdict.genuine and verdict.exit_code in (1, 2) and verdict.reason
    finally:
        shutil.rmtree(where)


@settings(max_examples=60, deadline=None)
@given(cut=st.floats(0, 1, exclude_max=True))
def test_a_zip_cut_at_any_byte_is_rejected(sealed, tmp_path_factory, cut):
    _, files, _ = sealed
    where = tmp_path_factory.mktemp("cut")
    whole = _write(files, True, where).read_bytes()
    assert verify_bundle(where / "b.zip").genuine
    (where / "b.zip").write_bytes(whole[: int(cut * len(whole))])
    assert not verify_bundle(where / "b.zip").genuine


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_a_zip_with_any_byte_changed_never_crashes_or_passes_changed_content(sealed, tmp_path_factory, data):
    _, files, _ = sealed
    where = tmp_path_factory.mktemp("flip")
    whole = _write(files, True, where).read_bytes()
    at = data.draw(st.integers(0, len(whole) - 1))
    bit = data.draw(st.integers(1, 255))
    (where / "b.zip").write_bytes(whole[:at] + bytes([whole[at] ^ bit]) + whole[at + 1:])
    verdict = verify_bundle(where / "b.zip")  # must not raise
    if verdict.genuine:  # only the zip's own metadata (a date, an attribute) was changed
        with zipfile.ZipFile(where / "b.zip") as zf:
            assert {name: zf.read(name) for name in zf.namelist()} == files
