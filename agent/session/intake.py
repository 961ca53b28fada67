"""A new request, as it arrives: validated, and verified against the trusted technicians.

``take_request`` turns what a caller sent (fields, or a request file's text)
into a :class:`SessionRequest`, what its verification found, and for a request
file the digest that makes it single-use. It refuses a malformed request, a
file whose signature does not match, an expired file, and a signed file made
for another computer; every refusal is an ``ApiError("bad-request")`` with one
sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from agent.errors import ApiError, RequestError, TrustError
from agent.session.request import SessionRequest, Verification, unverified
from agent.session.request_file import (
    check_binding,
    file_digest,
    parse_request_file,
    verify_request,
    verify_ssh_login,
)
from agent.trust import TrustStore


def take_request(fields: object, request_file: object, source: str, now: datetime, *, device: str,
                 trusted: Path) -> tuple[SessionRequest, Verification, str | None]:
    """The request, what its verification found, and for a request file the digest that makes it single-use."""
    try:
        if request_file is not None:
            if not isinstance(request_file, str):
                raise RequestError("The request_file must be the request file's text.")
            parsed = parse_request_file(request_file, now=now)
            check_binding(parsed.request, parsed.signature is not None, device)
            verification = _verify(trusted, lambda store: verify_request(
                parsed.request, parsed.signature, parsed.signed_bytes, store, now=now))
            return parsed.request, verification, file_digest(parsed.signed_bytes)
        if fields is None:
            raise RequestError("Send the request's fields as \"request\", or a request file as \"request_file\".")
        request = SessionRequest.from_fields(fields)
        if request.device is not None or request.nonce is not None:
            request = replace(request, device=None, nonce=None)  # only a signed file binds a request
        if source == "ssh":
            return request, _verify(trusted, lambda store: verify_ssh_login(request, store, now=now)), None
        return request, unverified("the request is not signed."), None
    except RequestError as exc:
        raise ApiError("bad-request", str(exc)) from None


def _verify(trusted: Path, check: Callable[[TrustStore], Verification]) -> Verification:
    """``check(store)`` against the home's trusted technicians (re-read each time: edits apply at once)."""
    try:
        store = TrustStore.load(trusted)
    except TrustError as exc:
        return unverified(f"the trusted technicians cannot be read ({str(exc).rstrip('.')})")
    return check(store)
