"""Publishing to a real S3 server (SeaweedFS ``weed mini`` on 127.0.0.1) with Object Lock, and reviewing it.

Three homes publish, with the store stopped part of the time: everything
arrives once it is back. A published object cannot be deleted, overwritten or
have its retention shortened: the store refuses, and the tests assert the
refusal. Bad input: a bucket that does not exist, wrong credentials, an
endpoint that accepts connections and never answers, a zip bomb in the bucket.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from agent.cli import main
from agent.devicekey import DeviceKey
from agent.home import Home
from agent.publish.publisher import Publisher, bundle_name, device_id
from agent.publish.store import S3Store
from agent.review import ReviewIndex, review
from agent.review.remote import s3_bundles
from tests.unit.test_bundle import write_session
from tests.unit.test_review import make_bundle, make_key

pytestmark = pytest.mark.e2e


def make_home(tmp_path, name: str, endpoint: str, bucket: str, sessions: int = 2) -> tuple[Home, DeviceKey]:
    home = Home(tmp_path / name)
    key, _ = DeviceKey.init(home)
    for n in range(sessions):
        write_session(home, key, f"s-{name}-{n}")
    (home.path / "settings.json").write_text(json.dumps({"publish": {
        "url": f"s3://{bucket}/acme", "endpoint_url": endpoint, "retain_days": 2}}))
    return home, key


def keys_in(server, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in server.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_three_homes_publish_through_an_outage_and_everything_arrives(s3_server_factory, tmp_path, monkeypatch,
                                                                      capsys):
    server = s3_server_factory()
    bucket = server.make_bucket()
    from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    homes = [make_home(tmp_path, f"dev{i}", server.endpoint, bucket) for i in range(3)]
    assert main(["publish", "--home", str(homes[0][0].path)]) == 0
    assert len(keys_in(server, bucket)) == 2

    server.stop()
    for home, key in homes:
        write_session(home, key, f"s-{home.path.name}-late")
        assert main(["publish", "--home", str(home.path)]) == 1
    out = capsys.readouterr().out
    assert "still wait to be published: Cannot reach the store" in out
    assert main(["publish", "--status", "--home", str(homes[1][0].path)]) == 0
    status = capsys.readouterr().out
    assert "0 published, 3 waiting" in status and "last error: Cannot reach the store" in status
    # the spool survives a restart of the agent: a new Publisher (a new process) finds it all
    assert len(Publisher(homes[2][0]).spool.waiting()) == 3

    server.start()
    for home, _ in homes:
        assert main(["publish", "--wait", "--timeout", "120", "--home", str(home.path)]) == 0
    expected = sorted(f"acme/{bundle_name(device_id(key.fingerprint), f's-{home.path.name}-{n}')}"
                      for home, key in homes for n in ("0", "1", "late"))
    assert keys_in(server, bucket) == expected
    client = server.client()
    for home, key in homes:
        name = f"acme/{bundle_name(device_id(key.fingerprint), f's-{home.path.name}-late')}"
        head = client.head_object(Bucket=bucket, Key=name)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=1)
        body = client.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == head["Metadata"]["sha256"]
    # publishing again sends nothing twice
    assert main(["publish", "--home", str(homes[0][0].path)]) == 0
    assert len(keys_in(server, bucket)) == 9


def test_a_published_object_cannot_be_deleted_overwritten_or_shortened(s3_env, tmp_path, capsys):
    server, bucket = s3_env
    home, key = make_home(tmp_path, "dev", server.endpoint, bucket, sessions=1)
    assert main(["publish", "--home", str(home.path)]) == 0
    name = f"acme/{bundle_name(device_id(key.fingerprint), 's-dev-0')}"
    client = server.client()
    head = client.head_object(Bucket=bucket, Key=name)
    version, original = head["VersionId"], client.get_object(Bucket=bucket, Key=name)["Body"].read()

    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=bucket, Key=name, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": name, "VersionId": version}]})
    assert [e["Code"] for e in answer.get("Errors", [])] == ["AccessDenied"] and not answer.get("Deleted")
    for mode, shorter in (("COMPLIANCE", head["ObjectLockRetainUntilDate"] - timedelta(days=1)),
                          ("GOVERNANCE", head["ObjectLockRetainUntilDate"])):
        with pytest.raises(ClientError) as refused:
            client.put_object_retention(Bucket=bucket, Key=name, VersionId=version, BypassGovernanceRetention=True,
                                        Retention={"Mode": mode, "RetainUntilDate": shorter})
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as refused:  # the way Chaperone writes: never over what is there
        client.put_object(Bucket=bucket, Key=name, Body=b"forged", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    # an unconditional overwrite or delete only adds a version or a marker: the locked version stays as it was
    client.put_object(Bucket=bucket, Key=name, Body=b"forged")
    client.delete_object(Bucket=bucket, Key=name)
    assert client.get_object(Bucket=bucket, Key=name, VersionId=version)["Body"].read() == original
    assert client.head_object(Bucket=bucket, Key=name, VersionId=version)["ObjectLockMode"] == "COMPLIANCE"


def test_a_bucket_that_does_not_exist_and_wrong_credentials(s3_env, tmp_path, monkeypatch, capsys):
    server, bucket = s3_env
    home, _ = make_home(tmp_path, "dev", server.endpoint, "no-such-bucket", sessions=1)
    assert main(["publish", "--home", str(home.path)]) == 1
    assert "The bucket no-such-bucket does not exist" in capsys.readouterr().out
    index = str(tmp_path / "index")
    assert main(["review", "s3://no-such-bucket/acme", "--endpoint-url", server.endpoint, "--index", index]) == 2
    assert "The bucket no-such-bucket does not exist" in capsys.readouterr().err

    good, _ = make_home(tmp_path, "dev2", server.endpoint, bucket, sessions=1)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    assert main(["publish", "--home", str(good.path)]) == 1
    assert "refused the credentials" in capsys.readouterr().out
    assert main(["review", f"s3://{bucket}/acme", "--endpoint-url", server.endpoint, "--index", index]) == 2
    assert "refused the credentials" in capsys.readouterr().err
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert main(["publish", "--home", str(good.path)]) == 1
    assert "No S3 credentials were found" in capsys.readouterr().out
    assert len(Publisher(good).spool.waiting()) == 1  # nothing lost


def test_a_bucket_without_object_lock_is_refused(s3_env, tmp_path, capsys):
    server, _ = s3_env
    plain = f"plain-{int(time.time() * 1000) % 10**9}"
    server.client().create_bucket(Bucket=plain)
    home, _ = make_home(tmp_path, "dev", server.endpoint, plain, sessions=1)
    assert main(["publish", "--home", str(home.path)]) == 1
    assert "has no Object Lock" in capsys.readouterr().out
    assert server.client().list_objects_v2(Bucket=plain).get("KeyCount", 0) == 0


@pytest.fixture
def hanging_endpoint():
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_an_endpoint_that_hangs_costs_seconds_and_loses_nothing(s3_env, hanging_endpoint, tmp_path):
    home, _ = make_home(tmp_path, "dev", hanging_endpoint, "fleet", sessions=1)
    store = S3Store("s3://fleet/acme", hanging_endpoint, connect_timeout=1, read_timeout=1)
    publisher = Publisher(home, store=store)
    assert publisher.catch_up() == ["s-dev-0"]
    started = time.monotonic()
    result = publisher.flush(everything=True)
    took = time.monotonic() - started
    assert result.published == [] and result.waiting == 1 and "Cannot reach the store" in result.failed[0][1]
    assert took < 30, f"a hanging store held the publisher {took:.0f} s"
    assert publisher.spool.waiting()[0].attempts == 1
    with pytest.raises(Exception) as failed:
        list(s3_bundles("s3://fleet/acme", [], tmp_path / "cache", store=store))
    assert "Cannot reach the store" in str(failed.value)


def test_review_of_a_bucket_finds_tampering_unknown_devices_and_a_zip_bomb(s3_env, tmp_path, capsys):
    server, bucket = s3_env
    homes = [make_home(tmp_path, f"dev{i}", server.endpoint, bucket, sessions=2) for i in range(2)]
    for home, _ in homes:
        assert main(["publish", "--home", str(home.path)]) == 0
    client = server.client()
    stranger = make_bundle(tmp_path, make_key("stranger"), 9)
    client.upload_file(str(stranger), bucket, "acme/elsewhere/bundles/s-stranger.zip")
    tampered = tmp_path / "tampered.zip"
    key0 = f"acme/{bundle_name(device_id(homes[0][1].fingerprint), 's-dev0-0')}"
    original = client.get_object(Bucket=bucket, Key=key0)["Body"].read()
    (tmp_path / "orig.zip").write_bytes(original)
    with zipfile.ZipFile(tmp_path / "orig.zip") as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data.replace(b"printer", b"PRINTER") if name == "session.jsonl" else data)
    client.upload_file(str(tampered), bucket, "acme/copies/s-dev0-0.zip")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("session.jsonl", b"\0" * (32 << 20))
    client.upload_file(str(bomb), bucket, "acme/bomb.zip")
    devices = tmp_path / "devices"
    devices.write_text("".join(f"dev{i} {k.allowed_signers_line().split(' ', 1)[1]}\n"
                               for i, (_, k) in enumerate(homes)))
    index = tmp_path / "index"
    args = ["review", f"s3://{bucket}/acme", "--endpoint-url", server.endpoint, "--devices", str(devices),
            "--index", str(index), "--json"]
    capsys.readouterr()
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert len(out["bundles"]) == 7
    kinds = sorted((p["kind"], p["file"].split("/acme/")[1]) for p in out["problems"])
    assert kinds == [("not-genuine", "copies/s-dev0-0.zip"), ("unknown-device", "elsewhere/bundles/s-stranger.zip"),
                     ("unreadable", "bomb.zip")]
    assert main(args) == 1  # the second time from the cache and the index: the same answer
    assert json.loads(capsys.readouterr().out)["problems"] == out["problems"]


def test_review_index_of_s3_needs_no_second_download(s3_env, tmp_path):
    server, bucket = s3_env
    home, _ = make_home(tmp_path, "dev", server.endpoint, bucket, sessions=3)
    assert main(["publish", "--home", str(home.path)]) == 0
    store = S3Store(f"s3://{bucket}/acme", server.endpoint)
    index = ReviewIndex(tmp_path / "index")
    first = review([f"s3://{bucket}/acme"], index=index,
                   remote=lambda url, skipped, ledgers: s3_bundles(url, skipped, tmp_path / "cache", store=store))
    fetched = []
    real = store.fetch
    store.fetch = lambda *a, **k: fetched.append(a[0]) or real(*a, **k)
    second = review([f"s3://{bucket}/acme"], index=index,
                    remote=lambda url, skipped, ledgers: s3_bundles(url, skipped, tmp_path / "cache", store=store))
    assert first.examined == 3 and second.examined == 0 and fetched == []
    assert [b["genuine"] for b in second.bundles] == [True] * 3
    index.close()


def test_the_worker_never_holds_up_its_caller_and_stops_promptly(hanging_endpoint, tmp_path):
    from agent.publish.publisher import PublishWorker

    home, _ = make_home(tmp_path, "dev", hanging_endpoint, "fleet", sessions=1)
    store = S3Store("s3://fleet/acme", hanging_endpoint, connect_timeout=1, read_timeout=30)
    made = []

    def make() -> Publisher:
        made.append(Publisher(home, store=store))
        return made[-1]

    worker = PublishWorker(make, interval=0.2)
    started = time.monotonic()
    worker.start()
    worker.nudge()
    assert time.monotonic() - started < 0.5  # start and nudge return at once, whatever the store does
    from tests.conftest import wait_for

    assert wait_for(lambda: made and made[0].spool.waiting(), timeout=20)  # caught up: the session is spooled
    stopping = time.monotonic()
    worker.stop(timeout=3)
    assert time.monotonic() - stopping < 5
    assert len(Publisher(home).spool.waiting()) == 1  # still there for the next start


def test_a_bundle_deleted_from_the_store_is_missing_from_its_ledger_and_a_pruned_one_is_not(s3_env, tmp_path,
                                                                                            capsys):
    from agent.ledger import Ledger
    from agent.publish.ledger_files import spool_ledger_export

    server, bucket = s3_env
    home, key = make_home(tmp_path, "dev", server.endpoint, bucket, sessions=3)
    with Ledger.open(home) as ledger:  # what the agent's journal hook does: checkpoints and seals into the ledger
        for n in range(3):
            for line in home.journal_path(f"s-dev-{n}").read_bytes().splitlines():
                if b'"type":"checkpoint"' in line or b'"type":"seal"' in line:
                    ledger.append(line)
        ledger.append(json.dumps({"data": {"session": "s-dev-gone", "reason": "retention"}, "session": "prunes",
                                  "type": "prune", "v": 1}, separators=(",", ":")).encode())
        ledger.append(b'{"data":{"count":1,"key":"x"},"session":"s-dev-gone","type":"seal","v":1}')
        ledger.export(tmp_path / "export")
    publisher = Publisher(home)
    assert publisher.catch_up() == ["s-dev-0", "s-dev-1", "s-dev-2"]
    assert "entries/000000000000-" in " ".join(spool_ledger_export(publisher, tmp_path / "export"))
    assert publisher.flush(everything=True).waiting == 0
    client = server.client()
    gone = f"acme/{bundle_name(device_id(key.fingerprint), 's-dev-1')}"
    client.delete_object(Bucket=bucket, Key=gone)  # a delete marker: the locked version stays, the listing hides it
    capsys.readouterr()
    assert main(["review", f"s3://{bucket}/acme", "--endpoint-url", server.endpoint, "--index",
                 str(tmp_path / "index"), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    kinds = {(p["kind"], p["session"]) for p in problems}
    assert ("missing", "s-dev-1") in kinds and ("pruned", "s-dev-gone") in kinds
    assert not any(k == "missing" and s in ("s-dev-0", "s-dev-2", "s-dev-gone") for k, s in kinds)
