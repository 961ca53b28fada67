"""A small zip is read from memory, each member inflated in one call (``BundleSource._inflate``): it must
read exactly what ``zipfile`` reads, never other bytes, whatever the zip holds or however it is damaged."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.bundle import source as source_module
from agent.bundle.layout import FILES
from agent.bundle.source import Unexpected, Unreadable, snapshot

MEMBERS = st.dictionaries(st.sampled_from(FILES), st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode),
                          min_size=1, max_size=len(FILES))


class _Unseekable(io.BytesIO):
    """Written through this, zipfile puts each member's sizes in a data descriptor after it (flag 0x8), as
    zips made by streaming tools have them."""

    def seekable(self) -> bool:
        return False

    def seek(self, *args: object) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        return len(self.getvalue())


def _zip(members: dict[str, bytes], stored: bool, level: int, streamed: bool = False) -> bytes:
    out = _Unseekable() if streamed else io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED,
                         compresslevel=None if stored else level) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def _read_all(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes] | str:
    """Every member's bytes, or the kind of error; ``fast``: from memory, else through zipfile's reader."""
    with monkeypatch.context() as m:
        if not fast:
            m.setattr(source_module, "SMALL", -1)
        try:
            with snapshot(path) as taken, taken.open() as bundle:
                assert (bundle._bytes is not None) == fast
                return {name: bundle.read(name) for name in bundle.names}
        except (Unreadable, Unexpected) as exc:
            return type(exc).__name__


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=MEMBERS, stored=st.booleans(), level=st.integers(min_value=0, max_value=9), streamed=st.booleans())
def test_a_small_zip_reads_the_same_from_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                members: dict[str, bytes], stored: bool, level: int,
                                                streamed: bool) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(_zip(members, stored, level, streamed))
    fast, slow = _read_all(path, True, monkeypatch), _read_all(path, False, monkeypatch)
    if isinstance(fast, dict) and isinstance(slow, dict):
        assert fast == slow
    assert not (isinstance(fast, dict) and not isinstance(slow, dict)), f"zipfile refuses it: {slow}" == members


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(members=MEMBERS, stored=st.booleans(), data=st.data())
def test_a_damaged_zip_reads_the_same_or_fails_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        members: dict[str, bytes], stored: bool,
                                                        data: st.DataObject) -> None:
    """Flip bytes anywhere (headers, compressed data, CRCs, the directory): where both read the zip, they read
    the same bytes. (The fast reader may refuse a member zipfile reads: one shorter than the directory says.)"""
    raw = bytearray(_zip(members, stored, 6))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    path = tmp_path / "b.zip"
    path.write_bytes(bytes(raw))
    fast, slow = _read_all(path, True, monkeypatch), _read_all(path, False, monkeypatch)
    if isinstance(fast, dict) and isinstance(slow, dict):
        assert fast == slow
    assert not (isinstance(fast, dict) and not isinstance(slow, dict)), f"zipfile refuses it: {slow}"


def test_a_zip_larger_than_the_fast_limit_is_read_by_zipfile(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(_zip({"session.jsonl": b"x" * 5000}, False, 6))
    monkeypatch.setattr(source_module, "SMALL", 100)
    with snapshot(path) as taken, taken.open() as bundle:
        assert bundle._bytes is None and bundle.read("session.jsonl") == b"x" * 5000
