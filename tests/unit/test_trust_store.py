"""TrustStore decisions, with keys, certificates and signatures from the real ssh-keygen,
cross-checked against ``ssh-keygen -Y verify`` on the same allowed_signers text."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import TrustError
from agent.sshsig import armor, dearmor
from agent.trust import TrustStore

NS = "chaperone-request"
MESSAGE = b'{"technician":"Alice Example","ticket":"T-123"}\n'
ALICE = "alice@acme.example"


class PKI:
    """Keys, a trusted CA and an untrusted one, and certificates in every state that matters."""

    def __init__(self, keys):
        self.keys = keys
        self.alice = keys.key("alice")
        self.bob = keys.key("bob", "ecdsa")
        self.carol = keys.key("carol", "rsa")
        self.ca = keys.key("ca")
        self.other_ca = keys.key("other-ca")
        good = dict(key_id=ALICE, principals=f"{ALICE},support")
        self.cert = keys.cert("alice-ok", self.ca, self.alice, **good,
                              options=("extension:ticket@chaperone=T-123", "extension:reason@chaperone=disk full"))
        self.cert_expired = keys.cert("alice-expired", self.ca, self.alice, validity="20200101:20200102", **good)
        self.cert_future = keys.cert("alice-future", self.ca, self.alice, validity="+1d:+2d", **good)
        self.cert_host = keys.cert("alice-host", self.ca, self.alice, host=True, **good)
        self.cert_no_principals = keys.cert("alice-noprinc", self.ca, self.alice, key_id=ALICE)
        self.cert_other_ca = keys.cert("alice-otherca", self.other_ca, self.alice, **good)
        self.cert_wildcard = keys.cert("alice-wild", self.ca, self.alice, key_id=ALICE, principals="*@acme.example")
        self.cert_key_id_only = keys.cert("dave", self.ca, self.alice, key_id="dave@acme.example", principals="support")

    def pub(self, key) -> str:
        return self.keys.line(f"{key}.pub")

    def cert_pub(self, cert) -> str:
        return self.keys.line(cert)


@pytest.fixture(scope="module")
def pki(ssh_keys):
    return PKI(ssh_keys)


# (id, allowed_signers lines, signer, principal, namespace, trusted?)
def _cases(p: PKI):
    a, b, c, ca, oca = p.pub(p.alice), p.pub(p.bob), p.pub(p.carol), p.pub(p.ca), p.pub(p.other_ca)
    return [
        ("plain key", [f"{ALICE} {a}"], p.alice, ALICE, NS, True),
        ("plain ecdsa", [f"bob@acme.example {b}"], p.bob, "bob@acme.example", NS, True),
        ("plain rsa", [f"carol@acme.example {c}"], p.carol, "carol@acme.example", NS, True),
        ("other principal", [f"{ALICE} {a}"], p.alice, "mallory@acme.example", NS, False),
        ("wildcard principal", [f"*@acme.example {a}"], p.alice, ALICE, NS, True),
        ("negated principal", [f"*@acme.example,!{ALICE} {a}"], p.alice, ALICE, NS, False),
        ("other key", [f"{ALICE} {b}"], p.alice, ALICE, NS, False),
        ("namespace allowed", [f'{ALICE} namespaces="chaperone-*" {a}'], p.alice, ALICE, NS, True),
        ("namespace refused", [f'{ALICE} namespaces="file,email" {a}'], p.alice, ALICE, NS, False),
        ("line expired", [f'{ALICE} valid-before="20200101Z" {a}'], p.alice, ALICE, NS, False),
        ("line not yet valid", [f'{ALICE} valid-after="20990101Z" {a}'], p.alice, ALICE, NS, False),
        ("line in validity", [f'{ALICE} valid-after="20200101Z",valid-before="20990101Z" {a}'], p.alice, ALICE, NS, True),
        ("plain key on a CA line", [f"{ALICE} cert-authority {a}"], p.alice, ALICE, NS, False),
        ("bad line then good", [f"{ALICE} bogus {a}", f"{ALICE} {a}"], p.alice, ALICE, NS, True),
        ("refused line then good", [f'{ALICE} namespaces="file" {a}', f"{ALICE} {a}"], p.alice, ALICE, NS, True),
        ("cert", [f"*@acme.example cert-authority {ca}"], p.cert, ALICE, NS, True),
        ("cert upper-case option", [f"*@acme.example CERT-AUTHORITY {ca}"], p.cert, ALICE, NS, True),
        ("cert other principal", [f"*@acme.example cert-authority {ca}"], p.cert, "bob@acme.example", NS, False),
        ("cert principal outside line", [f"bob@acme.example cert-authority {ca}"], p.cert, ALICE, NS, False),
        ("cert untrusted CA", [f"*@acme.example cert-authority {oca}"], p.cert, ALICE, NS, False),
        ("cert from other CA", [f"*@acme.example cert-authority {ca}"], p.cert_other_ca, ALICE, NS, False),
        ("cert expired", [f"*@acme.example cert-authority {ca}"], p.cert_expired, ALICE, NS, False),
        ("cert not yet valid", [f"*@acme.example cert-authority {ca}"], p.cert_future, ALICE, NS, False),
        ("host cert", [f"*@acme.example cert-authority {ca}"], p.cert_host, ALICE, NS, False),
        ("cert without principals", [f"*@acme.example cert-authority {ca}"], p.cert_no_principals, ALICE, NS, False),
        ("cert wildcard principal", [f"*@acme.example cert-authority {ca}"], p.cert_wildcard, ALICE, NS, False),
        ("cert whose key is listed plain", [f"{ALICE} {a}"], p.cert, ALICE, NS, False),
        ("cert CA namespace refused", [f'*@acme.example cert-authority,namespaces="file" {ca}'], p.cert, ALICE, NS, False),
        ("cert support principal", [f"support cert-authority {ca}"], p.cert, "support", NS, True),
    ]



@pytest.fixture(scope="module")
def cases(pki):
    return {case[0]: case for case in _cases(pki)}


_CASE_NAMES = [
    "plain key", "plain ecdsa", "plain rsa", "other principal", "wildcard principal", "negated principal",
    "other key", "namespace allowed", "namespace refused", "line expired", "line not yet valid",
    "line in validity", "plain key on a CA line", "bad line then good", "refused line then good", "cert",
    "cert upper-case option", "cert other principal", "cert principal outside line", "cert untrusted CA",
    "cert from other CA", "cert expired", "cert not yet valid", "host cert", "cert without principals",
    "cert wildcard principal", "cert whose key is listed plain", "cert CA namespace refused",
    "cert support principal",
]


@pytest.mark.parametrize("name", _CASE_NAMES)
def test_decision_matches_ssh_keygen_verify(name, cases, ssh_keys):
    _, lines, signer, principal, namespace, expected = cases[name]
    text = "\n".join(lines) + "\n"
    sig = ssh_keys.sign(signer, namespace, MESSAGE)
    store = TrustStore.parse(text)
    try:
        store.verify_signature(sig, namespace, MESSAGE, principal)
        ours = True
    except TrustError as exc:
        ours = False
        message = str(exc)
        assert message.endswith(".") and "\n" not in message and message[0].isupper()
    assert ours is expected
    assert ssh_keys.verify(text, principal, namespace, MESSAGE, sig) is expected


def test_case_list_is_complete(cases):
    assert sorted(cases) == sorted(_CASE_NAMES)


def test_identity_of_a_plain_key(pki, ssh_keys):
    store = TrustStore.parse(f"# Acme\n{ALICE} {pki.pub(pki.alice)}\n")
    ident = store.verify_signature(ssh_keys.sign(pki.alice, NS, MESSAGE), NS, MESSAGE, ALICE)
    assert ident.principal == ALICE
    assert ident.fingerprint == ssh_keys.fingerprint(f"{pki.alice}.pub")
    assert (ident.via_ca, ident.ca_fingerprint, ident.key_id, ident.extensions, ident.line) == (False, None, None, {}, 2)


def test_identity_of_a_certificate(pki, ssh_keys):
    store = TrustStore.parse(f"*@acme.example cert-authority {pki.pub(pki.ca)}\n")
    ident = store.verify_signature(ssh_keys.sign(pki.cert, NS, MESSAGE), NS, MESSAGE, ALICE)
    assert ident.principal == ALICE and ident.via_ca
    assert ident.fingerprint == ssh_keys.fingerprint(f"{pki.alice}.pub")  # the certified key, as sshd's %f
    assert ident.ca_fingerprint == ssh_keys.fingerprint(f"{pki.ca}.pub")
    assert ident.key_id == ALICE
    assert ident.extensions["ticket@chaperone"] == "T-123"
    assert ident.extensions["reason@chaperone"] == "disk full"
    assert ident.extensions["permit-pty"] == ""
    assert ident.principals == (ALICE, "support")
    assert time.time() < ident.valid_before <= time.time() + 3600 + 60
    assert ident.to_dict()["principals"] == [ALICE, "support"]


def test_certificate_validity_follows_the_given_time(pki, ssh_keys):
    store = TrustStore.parse(f"*@acme.example cert-authority {pki.pub(pki.ca)}\n")
    sig = ssh_keys.sign(pki.cert_expired, NS, MESSAGE)
    with pytest.raises(TrustError, match="has expired"):
        store.verify_signature(sig, NS, MESSAGE, ALICE)
    ident = store.verify_signature(sig, NS, MESSAGE, ALICE, now=1577880000)  # 2020-01-01 12:00 UTC
    assert ident.key_id == ALICE
    assert ssh_keys.verify(f"*@acme.example cert-authority {pki.pub(pki.ca)}\n", ALICE, NS, MESSAGE, sig,
                           verify_time="20200101120000Z")


@pytest.mark.parametrize("tamper, reason", [
    (lambda sig, msg: (sig, msg + b"x"), "does not match"),
    (lambda sig, msg: (sig.replace("A", "B", 1), msg), "not valid"),
    (lambda sig, msg: ("not a signature", msg), "not an SSH signature"),
])
def test_bad_signatures_are_one_sentence(pki, ssh_keys, tamper, reason):
    store = TrustStore.parse(f"{ALICE} {pki.pub(pki.alice)}\n")
    sig, msg = tamper(ssh_keys.sign(pki.alice, NS, MESSAGE), MESSAGE)
    with pytest.raises(TrustError, match=reason):
        store.verify_signature(sig, NS, msg, ALICE)


def test_wrong_namespace_in_the_signature(pki, ssh_keys):
    store = TrustStore.parse(f"{ALICE} {pki.pub(pki.alice)}\n")
    with pytest.raises(TrustError, match="namespace"):
        store.verify_signature(ssh_keys.sign(pki.alice, "file", MESSAGE), NS, MESSAGE, ALICE)


def test_refusal_names_the_reason(pki, ssh_keys):
    store = TrustStore.parse(f"*@acme.example cert-authority {pki.pub(pki.ca)}\n")
    with pytest.raises(TrustError, match="not a user certificate"):
        store.verify_signature(ssh_keys.sign(pki.cert_host, NS, MESSAGE), NS, MESSAGE, ALICE)
    with pytest.raises(TrustError, match=r"not trusted for bob@acme\.example"):
        store.verify_signature(ssh_keys.sign(pki.alice, NS, MESSAGE), NS, MESSAGE, "bob@acme.example")


# --- logins (sshd) ----------------------------------------------------------------------------

def _blob(path) -> bytes:
    return base64.b64decode(open(path).read().split()[1])


@pytest.fixture(scope="module")
def login_store(pki):
    return TrustStore.parse(
        f"alice@acme.example,alice@acme.test {pki.pub(pki.alice)}\n"
        f'bob@acme.example valid-before="20200101Z" {pki.pub(pki.bob)}\n'
        f"*@acme.example cert-authority {pki.pub(pki.ca)}\n"
    )


def test_login_with_a_listed_plain_key(pki, login_store, ssh_keys):
    ident = login_store.lookup_key(_blob(f"{pki.alice}.pub"), user="root")
    assert ident.principal == ALICE and not ident.via_ca
    assert ident.fingerprint == ssh_keys.fingerprint(f"{pki.alice}.pub")


def test_login_with_an_unknown_or_expired_key(pki, login_store):
    assert login_store.lookup_key(_blob(f"{pki.carol}.pub"), user="root") is None
    with pytest.raises(TrustError, match=r"^The key SHA256:\S+ is not in trusted_technicians\.$"):
        login_store.identify_key(_blob(f"{pki.carol}.pub"), "root")
    with pytest.raises(TrustError, match="line 2 of trusted_technicians has expired"):
        login_store.identify_key(_blob(f"{pki.bob}.pub"), "root")


def test_login_with_a_certificate_for_a_listed_user(pki, login_store):
    ident = login_store.lookup_key(_blob(pki.cert), user="support")
    assert ident.principal == ALICE and ident.via_ca and ident.line == 3
    assert ident.extensions["ticket@chaperone"] == "T-123"


def test_login_technician_from_the_key_id(pki, login_store):
    ident = login_store.lookup_key(_blob(pki.cert_key_id_only), user="support")
    assert ident.principal == "dave@acme.example"


@pytest.mark.parametrize("cert_attr, user, reason", [
    ("cert", "root", "'root' is not among its principals"),
    ("cert_expired", "support", "it has expired"),
    ("cert_future", "support", "it is not valid yet"),
    ("cert_host", "support", "not a user certificate"),
    ("cert_no_principals", "support", "lists no principals"),
    ("cert_other_ca", "support", "not a cert-authority"),
])
def test_login_certificate_refusals(pki, login_store, cert_attr, user, reason):
    blob = _blob(getattr(pki, cert_attr))
    assert login_store.lookup_key(blob, user=user) is None
    with pytest.raises(TrustError, match=reason):
        login_store.identify_key(blob, user)


def test_login_certificate_naming_no_trusted_technician(pki):
    store = TrustStore.parse(f"*@other.example cert-authority {pki.pub(pki.ca)}\n")
    with pytest.raises(TrustError, match="names no technician"):
        store.identify_key(_blob(pki.cert_key_id_only), "support")


def test_a_tampered_certificate_is_refused(pki, login_store):
    blob = bytearray(_blob(pki.cert))
    at = bytes(blob).find(b"support")
    blob[at] = ord("S")  # "Support": the CA's signature no longer matches
    with pytest.raises(TrustError, match="CA signature does not match"):
        login_store.identify_key(bytes(blob), "Support")
    assert login_store.lookup_key(bytes(blob[:40]), "support") is None
    assert login_store.lookup_key(b"\x00\x00\x00\x07ssh-foo", "support") is None
    assert login_store.lookup_key(b"", "support") is None


def test_a_pinned_ca_key_of_small_order_certifies_nothing(pki):
    """The neutral point of Ed25519 is a valid encoding of a key, and with it one "signature" (R = the neutral
    point, S = 0) verifies for every message in OpenSSL. A customer tricked into pinning that key as a CA
    must not thereby let anyone in: Chaperone checks CA signatures through libsodium, which refuses it."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

    from agent.sshwire import ssh_string

    weak_ca = ssh_string(b"ssh-ed25519") + ssh_string(bytes([1]) + bytes(31))
    real = _blob(pki.cert)
    body = real[: -(4 + 83) - (4 + 51)]  # the certificate without its CA key and signature (both Ed25519)
    forged = body + ssh_string(weak_ca) + ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(bytes([1]) + bytes(63)))
    line = f"ssh-ed25519-cert-v01@openssh.com {base64.b64encode(forged).decode()}"
    load_ssh_public_identity(line.encode()).verify_cert_signature()  # OpenSSL alone accepts it
    store = TrustStore.parse(f"*@acme.example cert-authority ssh-ed25519 {base64.b64encode(weak_ca).decode()}\n")
    with pytest.raises(TrustError, match="CA signature does not match"):
        store.identify_key(forged, "support")
    assert store.lookup_key(forged, "support") is None


# --- hostile input never escapes as anything but TrustError ---------------------------------------

def _mutations(blob: bytes):
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, len(blob) - 1), st.integers(0, 255)).map(
            lambda t: blob[: t[0]] + bytes([t[1]]) + blob[t[0] + 1 :]),
        st.integers(0, len(blob)).map(lambda n: blob[:n]),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_identify_key_only_ever_raises_trust_error(pki, login_store, data):
    blob = data.draw(_mutations(_blob(pki.cert)) | _mutations(_blob(f"{pki.alice}.pub")))
    try:
        login_store.identify_key(blob, "support")
    except TrustError as exc:
        assert "\n" not in str(exc)


@pytest.fixture(scope="module")
def cert_signature(pki, ssh_keys) -> bytes:
    return dearmor(ssh_keys.sign(pki.cert, NS, MESSAGE))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_verify_signature_only_ever_raises_trust_error(pki, cert_signature, data):
    store = TrustStore.parse(f"*@acme.example cert-authority {pki.pub(pki.ca)}\n{ALICE} {pki.pub(pki.alice)}\n")
    mutated = data.draw(_mutations(cert_signature))
    try:
        store.verify_signature(armor(mutated), NS, MESSAGE, ALICE)
    except TrustError as exc:
        assert "\n" not in str(exc)
