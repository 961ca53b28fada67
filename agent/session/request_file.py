"""Request files and verification: a request signed by the technician, checked on the customer's side.

A *request file* is what a technician sends to the customer::

    {"format": "chaperone-request/1",
     "request": {...fields, "created": "...", "expires": "..."},
     "signature": "-----BEGIN SSH SIGNATURE-----…" or null}

The signature is an SSHSIG (namespace ``chaperone-request``) over the
canonical JSON bytes of ``request``, made with ``ssh-keygen -Y sign`` so that
any key type and OpenSSH certificates work. It is checked against the home's
``trusted_technicians`` for the principal equal to the request's email.
An SSH login's request is verified from the login's key itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from agent import sshsig
from agent.canonical import canonical_bytes
from agent.clock import rfc3339, utc_now
from agent.errors import FormatError, RequestError, TrustError
from agent.session.request import (
    FILE_FORMAT,
    FILE_LIFETIME,
    FILE_MAX_BYTES,
    NAMESPACE,
    SessionRequest,
    Verification,
    parse_time,
    unverified,
)
from agent.sshkeys import fingerprint as key_fingerprint
from agent.text import escape


def stamp(request: SessionRequest, device: str | None = None, now: datetime | None = None) -> SessionRequest:
    """The request ready to sign into a file: ``created``, ``expires``, a fresh ``nonce`` (each file is
    used once) and the ``device`` (the customer's computer's fingerprint) it is for."""
    now = now or utc_now()
    return replace(request, created=rfc3339(now), expires=rfc3339(now + FILE_LIFETIME), device=device,
                   nonce=secrets.token_urlsafe(18))


def check_binding(request: SessionRequest, signed: bool, device: str) -> None:
    """A signed request file must name this computer; ``RequestError`` says what to ask for.

    An unsigned file proves nothing about who wrote it, so its device is only checked when present."""
    if request.device is None:
        if signed:
            raise RequestError(
                f"This request file names no computer, so it could be used on any; ask the technician for "
                f"one made for this computer (chaperone request … --device {device} -o FILE).")
        return
    if request.device != device:
        raise RequestError(
            f"This request file was made for another computer ({request.device}), not this one ({device}); "
            "ask the technician for one made for this computer.")


def file_digest(signed_bytes: bytes) -> str:
    """What makes a request file single-use: the SHA-256 of its signed content (which holds its nonce)."""
    return hashlib.sha256(signed_bytes).hexdigest()


def sign_with_ssh_keygen(message: bytes, key_path: str | os.PathLike) -> str:
    """An armored SSHSIG by ``ssh-keygen -Y sign``; uses ``KEY-cert.pub`` when it sits beside KEY."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise RequestError("Signing needs OpenSSH's ssh-keygen; install OpenSSH (8.1 or later).")
    key = Path(key_path).expanduser()
    if not key.exists():
        raise RequestError(f"The signing key {key} does not exist; pass --sign-key with your SSH private key.")
    cert = Path(str(key) + "-cert.pub")
    use = cert if not str(key).endswith("-cert.pub") and cert.exists() else key
    proc = subprocess.run(
        [keygen, "-Y", "sign", "-q", "-n", NAMESPACE, "-f", str(use), "-"],
        input=message, capture_output=True, timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RequestError(
            f"ssh-keygen could not sign with {key}: {detail[-1] if detail else 'no reason given'}."
        )
    return proc.stdout.decode("ascii")


def request_file_text(request: SessionRequest, signature: str | None) -> str:
    doc = {"format": FILE_FORMAT, "request": request.fields(), "signature": signature}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class RequestFile:
    request: SessionRequest
    signature: str | None
    signed_bytes: bytes


def parse_request_file(text: str, *, now: datetime | None = None,
                       minimum_duration_s: int | None = None) -> RequestFile:
    """Parse and validate a request file's text; expired files are refused."""
    if len(text.encode("utf-8", "surrogatepass")) > FILE_MAX_BYTES:
        raise RequestError(f"The request file is larger than {FILE_MAX_BYTES // 1024} KiB; it is not a request file.")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise RequestError("The request file is not valid JSON; ask the technician for a new one.") from None
    if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT or not isinstance(doc.get("request"), dict):
        raise RequestError(f"This is not a Chaperone request file (expected format {FILE_FORMAT}).")
    signature = doc.get("signature")
    if signature is not None and (not isinstance(signature, str) or len(signature) > 16384):
        raise RequestError("The request file's signature is malformed; ask the technician for a new one.")
    request = SessionRequest.from_fields(doc["request"], minimum_duration_s=minimum_duration_s)
    if request.expires and parse_time(request.expires) < (now or utc_now()):
        raise RequestError(
            f"The request file expired at {request.expires}; ask the technician for a new one."
        )
    return RequestFile(request, signature, canonical_bytes(doc["request"]))


# --- verification -------------------------------------------------------------


def verify_request(request: SessionRequest, signature: str | None, signed: bytes, trust_store,
                   now: datetime | None = None) -> Verification:
    """Whether the request was signed by a key trusted for its email."""
    if signature is None:
        return unverified("the request is not signed.")
    if not request.email:
        return unverified("the request names no email to check its signature against.")
    try:
        signer = key_fingerprint(sshsig.verify(signature, NAMESPACE, signed).public_key_blob)
    except FormatError:  # a malformed signature, or a key blob we cannot read
        raise RequestError(
            "The request's signature does not match its content; it may have been altered, "
            "so ask the technician for a new one."
        ) from None
    try:
        ident = trust_store.verify_signature(signature, NAMESPACE, signed, request.email, now=now)
    except TrustError as exc:
        return unverified(str(exc).rstrip("."), request.email, signer)
    detail = f"verified: {request.display_name()}, key {ident.fingerprint}"
    if ident.via_ca:
        detail += f", certificate '{escape(ident.key_id or '')}' from a trusted authority"
    return Verification(True, ident.principal, ident.fingerprint, detail)


def verify_ssh_login(request: SessionRequest, trust_store, now: datetime | None = None) -> Verification:
    """Whether the SSH login key (or certificate) behind the request is trusted.

    The agent checks the key itself rather than trusting the caller's word;
    sshd lets the login in only if the technician holds that key.
    """
    ssh = request.ssh or {}
    try:
        blob = base64.b64decode(ssh.get("key") or "", validate=True)
    except ValueError:
        blob = b""
    if not blob:
        return unverified("the SSH login's key was not given.")
    try:
        ident = trust_store.identify_key(blob, user=ssh.get("user"), now=now)
    except (TrustError, ValueError) as exc:
        return unverified(str(exc).rstrip("."), request.email, key_fingerprint(blob))
    detail = f"verified: {request.display_name()}, key {ident.fingerprint}, SSH login as {escape(ssh['user'])}"
    if ident.via_ca:
        detail += f", certificate '{escape(ident.key_id or '')}' from a trusted authority"
    return Verification(True, ident.principal, ident.fingerprint, detail)
