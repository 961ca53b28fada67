"""What an SSH login asks: settings, the certificate conventions, signed request files, login memory."""

from __future__ import annotations

import json
import os
import time

from agent.settings import SSHSettings
from agent.ssh.state import LoginBook, LoginRecord, LoginState, ProcessRef
from agent.ssh.technician import NO_TICKET, key_id_details, login_request, requests_dir, signed_request_for
from agent.trust import Identity, TrustStore

ALICE = "alice@acme.example"


# --- the certificate conventions ----------------------------------------------------------------

def test_key_id_details():
    assert key_id_details(f"{ALICE};ticket=T-9; reason = disk full ;junk;=x") == {"ticket": "T-9", "reason": "disk full"}
    assert key_id_details(ALICE) == {} and key_id_details(None) == {}


def identity(**kw) -> Identity:
    return Identity(principal=kw.pop("principal", ALICE), fingerprint="SHA256:k", **kw)


def test_request_from_a_plain_key():
    fields = login_request(identity(), "support", "ssh-ed25519", "AAAA", SSHSettings())
    assert (fields["technician"], fields["email"], fields["org"], fields["ticket"], fields["reason"]) == (
        ALICE, ALICE, "acme.example", NO_TICKET, "SSH login as support")
    assert fields["capabilities"] == ["files", "shell"]
    assert fields["ssh"]["user"] == "support" and fields["ssh"]["key_fingerprint"] == "SHA256:k"
    assert "duration_s" not in fields and "watch" not in fields


def test_request_from_certificate_extensions_wins_over_key_id():
    ident = identity(via_ca=True, key_id=f"{ALICE};ticket=T-1;reason=from the key id",
                     extensions={"ticket@chaperone": "T-2", "name@chaperone": "Alice Example",
                                 "org@chaperone": "Acme IT"})
    fields = login_request(ident, "root", "ssh-ed25519-cert-v01@openssh.com", "AAAA",
                           SSHSettings(duration_s=600, watch=("/srv",)))
    assert (fields["technician"], fields["org"], fields["ticket"], fields["reason"]) == (
        "Alice Example", "Acme IT", "T-2", "from the key id")
    assert fields["capabilities"] == ["files", "shell", "admin"]  # root
    assert (fields["duration_s"], fields["watch"]) == (600, ["/srv"])


def test_over_long_certificate_values_are_cut_not_refused():
    fields = login_request(identity(extensions={"ticket@chaperone": "T" * 500}), "root", "t", "AAAA", SSHSettings())
    assert len(fields["ticket"]) == 64 and fields["ticket"].endswith("…")


def test_a_principal_without_a_domain():
    fields = login_request(identity(principal="alice"), "root", "t", "AAAA", SSHSettings())
    assert (fields["email"], fields["org"]) == (None, "unknown organisation")


# --- signed request files ------------------------------------------------------------------------

def _request_file(home, key, name="req.json", email=ALICE, ticket="T-77"):
    from agent.session.request import SessionRequest
    from agent.session.request_file import request_file_text, sign_with_ssh_keygen, stamp

    request = stamp(SessionRequest.from_fields({
        "technician": "Alice Example", "email": email, "org": "Acme IT", "ticket": ticket,
        "reason": "rotate the TLS certificate", "duration_s": 900}))
    text = request_file_text(request, sign_with_ssh_keygen(request.signed_bytes(), key))
    folder = requests_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_signed_request_file_gives_ticket_and_reason(home, ssh_keys):
    alice, bob = ssh_keys.key("alice"), ssh_keys.key("bob", "ecdsa")
    store = TrustStore.parse(f"{ALICE} {ssh_keys.line(f'{alice}.pub')}\nbob@acme.example {ssh_keys.line(f'{bob}.pub')}\n")
    _request_file(home, bob, "bob.json", email="bob@acme.example", ticket="T-bob")
    _request_file(home, alice, "alice.json")
    (requests_dir(home) / "junk.json").write_text("{not json")
    fp = ssh_keys.fingerprint(f"{alice}.pub")
    fields = signed_request_for(home, store, fp)
    assert (fields["ticket"], fields["reason"], fields["duration_s"], fields["request_file"]) == (
        "T-77", "rotate the TLS certificate", 900, "alice.json")
    merged = login_request(identity(), "root", "ssh-ed25519", "AAAA", SSHSettings(), fields)
    assert (merged["ticket"], merged["org"], merged["ssh"]["request_file"]) == ("T-77", "Acme IT", "alice.json")


def test_untrusted_request_files_are_ignored(home, ssh_keys):
    alice = ssh_keys.key("alice")
    _request_file(home, alice)
    fp = ssh_keys.fingerprint(f"{alice}.pub")
    assert signed_request_for(home, TrustStore(), fp) is None
    assert signed_request_for(home, TrustStore.parse(f"{ALICE} {ssh_keys.line(f'{alice}.pub')}\n"), "SHA256:other") is None


# --- login memory ------------------------------------------------------------------------------

def test_state_round_trip_and_matching(home):
    me = ProcessRef.of(os.getpid())
    with LoginState(home).open() as book:
        book.records.append(LoginRecord("s-1", "root", "SHA256:a", "pending", time.time(), sshd=[me]))
    with LoginState(home).open(write=False) as book:
        assert book.find("root", "SHA256:a", None).id == "s-1"
        assert book.find("root", "SHA256:b", me).id == "s-1"  # another key on the same login
        assert book.find("support", "SHA256:a", me) is None  # never across accounts
        assert book.find("root", "SHA256:b", ProcessRef(os.getpid(), 1.0)) is None
    assert (home.path / "ssh").stat().st_mode & 0o777 == 0o700


def test_prune_forgets_finished_refusals_and_stale_records():
    now = time.time()
    live = ProcessRef.of(os.getpid())
    dead = ProcessRef(os.getpid(), 1.0)
    book = LoginBook([
        LoginRecord("r-live", "root", "a", "refused", now, sshd=[live]),
        LoginRecord("r-dead", "root", "b", "refused", now, sshd=[dead]),
        LoginRecord("p-old", "root", "c", "pending", now - 2 * 86400),
        LoginRecord("a-new", "root", "d", "allowed", now),
    ])
    book.prune(now)
    assert [r.id for r in book.records] == ["r-live", "a-new"]


def test_a_damaged_state_file_is_an_empty_memory(home):
    folder = home.path / "ssh"
    folder.mkdir(mode=0o700)
    (folder / "logins.json").write_text(json.dumps({"records": [{"id": 1}]}))
    with LoginState(home).open() as book:
        assert book.records == []
