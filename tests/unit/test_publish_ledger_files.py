"""The ledger's export in the spool: pieces that never change, only what is new each time."""

from __future__ import annotations

import hashlib

from agent.publish.ledger_files import published_entries, spool_ledger_export
from agent.publish.publisher import Publisher
from agent.settings import PublishSettings


def export(folder, entries: list[bytes], size_note: int, cosigned: dict[int, bytes]):
    folder.mkdir(exist_ok=True)
    (folder / "origin").write_text("chaperone.local/device/x\n")
    (folder / "vkey").write_text("chaperone.local/device/x+01234567+AAAA\n")
    (folder / "entries").write_bytes(b"".join(e + b"\n" for e in entries))
    (folder / "checkpoint").write_bytes(f"chaperone.local/device/x\n{size_note}\nROOT=\n\n— x sig\n".encode())
    (folder / "cosigned").mkdir(exist_ok=True)
    for size, note in cosigned.items():
        (folder / "cosigned" / str(size)).write_bytes(note)
    return folder


def test_each_round_spools_only_what_is_new(home, tmp_path):
    publisher = Publisher(home, settings=PublishSettings(url="s3://fleet/acme"))
    first = export(tmp_path / "e1", [b'{"seq":0}', b'{"seq":1}'], 2, {2: b"note 2 cosig a"})
    names = spool_ledger_export(publisher, first)
    checkpoint = hashlib.sha256((first / "checkpoint").read_bytes()).hexdigest()[:8]
    assert names[:4] == ["origin", "vkey", "entries/000000000000-000000000002",
                         f"checkpoints/000000000002-{checkpoint}"]
    assert len(names) == 5 and names[4].startswith("cosigned/000000000002-")
    assert spool_ledger_export(publisher, first) == []  # nothing new: nothing spooled twice
    second = export(tmp_path / "e2", [b'{"seq":0}', b'{"seq":1}', b'{"seq":2}'], 3,
                    {2: b"note 2 cosig a, b", 3: b"note 3"})
    names = spool_ledger_export(publisher, second)
    assert names[0] == "entries/000000000002-000000000003" and published_entries(publisher) == 3
    assert len([n for n in names if n.startswith("cosigned/000000000002-")]) == 1  # cosigned again: a new object
    piece = next(i for i in publisher.spool.waiting() if i.name.endswith("entries/000000000002-000000000003"))
    assert open(piece.file, "rb").read() == b'{"seq":2}\n'


def test_the_worker_spools_the_ledger_export_each_round(home, device_key):
    from agent.ledger import Ledger
    from agent.publish.publisher import PublishWorker
    from agent.publish.store import S3Store
    from tests.conftest import wait_for

    with Ledger.open(home) as ledger:
        ledger.append(b'{"type":"seal","session":"s-1"}')
        ledger.sign_head()

    def export(out):
        with Ledger.open(home, readonly=True) as view:
            return view.export(out)

    store = S3Store("s3://fleet/acme", "http://127.0.0.1:9", connect_timeout=1, read_timeout=1)
    made = []

    def make():
        made.append(Publisher(home, settings=PublishSettings(url="s3://fleet/acme"), store=store))
        return made[-1]

    worker = PublishWorker(make, interval=0.2, ledger_export=export)
    worker.start()
    try:
        assert wait_for(lambda: made and any("/ledger/entries/" in i.name for i in made[0].spool.waiting()), 20)
    finally:
        worker.stop()
    names = [i.name.split("/ledger/")[1] for i in Publisher(home).spool.waiting()]
    assert "origin" in names and "vkey" in names and "entries/000000000000-000000000001" in names
