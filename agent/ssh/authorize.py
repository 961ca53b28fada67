"""``chaperone ssh-authorize``: sshd's AuthorizedKeysCommand, gated by the customer's consent.

sshd runs ``ssh-authorize %u %k %t %f`` for each key a client offers, and
once more to check the chosen key's signature. For each call:

1. The key must be well formed, of a type we know, for an account the home
   allows (``ssh.users``), and trusted in ``trusted_technicians`` (a listed
   key, or a certificate from a trusted CA that names the account). Otherwise
   nothing is printed and the attempt is journaled as unattended access.
2. The customer is asked through the agent, once per login (see
   ``agent.ssh.state``): a request with ``source: "ssh"``, then a wait within
   ``ssh.consent_wait_s`` (keep it under sshd's LoginGraceTime).
3. Once the session is active, one authorized_keys line is printed, with
   ``expiry-time`` at the session's end (or the certificate's, if earlier)
   and ``from=`` if configured. A certificate gets a ``cert-authority`` line
   for its CA with ``principals`` set to the account.

No answer, a refusal, an agent that is not running or anything unexpected
prints nothing: the login is refused. Nothing here ever grants a login on its
own; the agent's session state is asked every time.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.api.client import AgentClient
from agent.errors import AgentUnavailable, ChaperoneError, TrustError
from agent.home import Home
from agent.settings import SSHSettings
from agent.ssh.state import LoginRecord, LoginState, ProcessRef
from agent.ssh.technician import login_request, signed_request_for
from agent.ssh.unattended import record_attempt
from agent.sshkeys import blob_to_line, blob_type
from agent.trust import Certificate, Identity, TrustStore
from agent.trust.allowed_signers import SUPPORTED_KEY_TYPES

log = logging.getLogger(__name__)

LIVE = ("allowed", "active")
REFUSED = ("refused", "expired")
POLL_S = 0.2
# Unix account names as sshd passes them (%u); anything else is refused before it reaches a line.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?$")


@dataclass(frozen=True)
class LoginAttempt:
    """One call from sshd: ``%u %k %t %f``, and the sshd process handling the login."""

    user: str
    key_b64: str
    key_type: str
    fingerprint: str
    sshd: ProcessRef | None = None


class Refused(Exception):
    """The login is refused; ``str`` is why, and ``record`` whether it is an unattended attempt."""

    def __init__(self, reason: str, record: bool = True):
        super().__init__(reason)
        self.record = record


def expiry_time(when: float) -> str:
    """authorized_keys ``expiry-time`` value, in UTC."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y%m%d%H%M%SZ")


def access_options(capabilities: list[str] | tuple[str, ...]) -> list[str]:
    """What the grant allows at the door: ``files`` alone is SFTP only; ``shell`` a shell with a terminal.
    No forwarding of ports, agents or X11 in either case (``restrict``)."""
    if "shell" in capabilities:
        return ["restrict", "pty"]
    if "files" in capabilities:
        return ["restrict", 'command="internal-sftp"']
    raise Refused("the customer granted neither files nor shell", record=False)


def authorized_keys_line(attempt: LoginAttempt, key_blob: bytes, until: float, settings: SSHSettings,
                         session_id: str, capabilities: list[str] | tuple[str, ...] = ("files", "shell")) -> str:
    """The line sshd will accept for this login, only until ``until`` and only for what was granted."""
    if attempt.user == "root" and "admin" not in capabilities:
        raise Refused("a login as root needs the admin capability, which the customer did not grant", record=False)
    options = [*access_options(capabilities), f'expiry-time="{expiry_time(until)}"']
    if settings.from_pattern:
        options.append(f'from="{settings.from_pattern}"')
    comment = f"chaperone-session:{session_id}"
    if blob_type(key_blob).endswith("-cert-v01@openssh.com"):
        ca_blob = Certificate.from_blob(key_blob).ca_blob
        return f'cert-authority,principals="{attempt.user}",{",".join(options)} {blob_to_line(ca_blob, comment)}'
    return f"{','.join(options)} {blob_to_line(key_blob, comment)}"


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class Authorizer:
    def __init__(self, home: Home, client=None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if client is None:
            client = AgentClient(home, timeout=5.0)
        self.home = home
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.state = LoginState(home)

    def authorize(self, attempt: LoginAttempt) -> str | None:
        """The authorized_keys line to print, or None; never raises for anything sshd or a client sends."""
        try:
            return self._authorize(attempt)
        except Refused as refusal:
            log.info("ssh login as %s with %s refused: %s", attempt.user, attempt.fingerprint, refusal)
            if refusal.record:
                record_attempt(self.home, user=attempt.user, key_type=attempt.key_type,
                               fingerprint=attempt.fingerprint, reason=str(refusal),
                               sshd_pid=attempt.sshd.pid if attempt.sshd else None)
            return None

    # --- the steps ----------------------------------------------------------------------------
    def _authorize(self, attempt: LoginAttempt) -> str | None:
        started = self.clock()
        try:
            settings = self.home.settings().ssh
        except ChaperoneError as exc:
            raise Refused(f"the home's settings cannot be read ({exc})") from None
        blob = self._key_blob(attempt)
        if not _USER.match(attempt.user):
            raise Refused("the account name is not one sshd would pass")
        if settings.users is not None and attempt.user not in settings.users:
            raise Refused(f"technicians may not log in as {attempt.user} (settings ssh.users)")
        identity = self._identify(blob, attempt.user)
        try:
            return self._consent(attempt, blob, identity, settings, started + settings.consent_wait_s)
        except AgentUnavailable as exc:
            raise Refused(f"the customer could not be asked: {exc}") from None

    @staticmethod
    def _key_blob(attempt: LoginAttempt) -> bytes:
        if attempt.key_type not in SUPPORTED_KEY_TYPES:
            raise Refused(f"the key type {attempt.key_type[:60]!r} is not supported")
        try:
            blob = base64.b64decode(attempt.key_b64, validate=True)
            key_type = blob_type(blob)
        except ValueError:  # binascii.Error and KeyFormatError are ValueErrors
            raise Refused("the key is malformed") from None
        if key_type != attempt.key_type:
            raise Refused("the key's data does not match its type")
        return blob

    def _identify(self, blob: bytes, user: str) -> Identity:
        try:
            store = TrustStore.load(self.home.trusted_technicians_path)
        except TrustError as exc:
            raise Refused(f"the trusted technicians cannot be read ({exc})") from None
        try:
            return store.identify_key(blob, user)
        except TrustError as exc:
            raise Refused(str(exc).rstrip(".")) from None

    def _consent(self, attempt: LoginAttempt, blob: bytes, identity: Identity, settings: SSHSettings,
                 deadline: float) -> str | None:
        fingerprint = identity.fingerprint
        with self.state.open() as book:
            book.prune(time.time())
            record = book.find(attempt.user, fingerprint, attempt.sshd)
            if record is not None:
                record.add_login(attempt.sshd)
                if record.state == "refused":
                    raise Refused("the customer refused this login", record=False)
                state = self._state_of(record.id)
                if state == "active":
                    record.state = "allowed"
                    return self._line(attempt, blob, identity, settings, record)
                if state in REFUSED:
                    record.state = "refused"
                    raise Refused("the customer refused this login", record=False)
                if state not in ("requested", "allowed"):  # ended, sealed or unknown: ask anew
                    book.remove(record)
                    record = None
            if record is None:
                record = self._ask(attempt, blob, identity, settings)
                book.records.append(record)
                if record.state == "refused":
                    raise Refused("the agent refused the request", record=False)
        state = self._await_active(record.id, deadline)
        with self.state.open() as book:
            current = book.for_session(record.id)
            if current is None:
                current = record
                book.records.append(current)
            current.add_login(attempt.sshd)
            if state in REFUSED:
                current.state = "refused"
                raise Refused("the customer refused this login", record=False)
            if state == "active":
                current.state = "allowed"
                return self._line(attempt, blob, identity, settings, current)
        raise Refused(f"no active session within {settings.consent_wait_s:g} s (state {state})", record=False)

    def _ask(self, attempt: LoginAttempt, blob: bytes, identity: Identity, settings: SSHSettings) -> LoginRecord:
        store = TrustStore.load(self.home.trusted_technicians_path)
        signed = signed_request_for(self.home, store, identity.fingerprint)
        fields = login_request(identity, attempt.user, attempt.key_type, attempt.key_b64, settings, signed)
        try:
            result = self.client.call("request", source="ssh", request=fields)  # the agent verifies ssh.key itself
        except AgentUnavailable:
            raise
        except ChaperoneError as exc:
            raise Refused(f"the agent did not accept the request: {exc}") from None
        state = "refused" if result.get("state") in REFUSED else "pending"
        return LoginRecord(id=str(result["id"]), user=attempt.user, fingerprint=identity.fingerprint,
                           state=state, at=time.time(), sshd=[attempt.sshd] if attempt.sshd else [])

    def _state_of(self, session_id: str) -> str:
        try:
            return str(self.client.call("wait", id=session_id, timeout=0)["state"])
        except AgentUnavailable:
            raise
        except ChaperoneError:  # the agent no longer knows it (another home, a wiped history)
            return "unknown"

    def _await_active(self, session_id: str, deadline: float) -> str:
        """Wait for the decision, then for the session to be recording; the last state seen."""
        remaining = max(0.0, deadline - self.clock())
        state = str(self.client.call("wait", id=session_id, timeout=remaining, until="active")["state"])
        while state == "allowed" and self.clock() < deadline:  # capture is starting
            self.sleep(POLL_S)
            state = self._state_of(session_id)
        return state

    def _line(self, attempt: LoginAttempt, blob: bytes, identity: Identity, settings: SSHSettings,
              record: LoginRecord) -> str:
        status = self.client.call("status")
        active = status.get("active") or {}
        if status.get("session") != record.id or not active.get("until"):
            raise Refused("the session is no longer active", record=False)
        record.until = active["until"]
        until = _epoch(active["until"])
        if identity.valid_before is not None:
            until = min(until, identity.valid_before)
        return authorized_keys_line(attempt, blob, until, settings, record.id,
                                    active.get("capabilities") or ())
