"""The technician trust store: ``trusted_technicians`` in OpenSSH allowed_signers format.

Two questions are asked of it:

* ``verify_signature``: is this SSHSIG, over this message and namespace, made
  by a key trusted for this principal? The rules are those of
  ``ssh-keygen -Y verify`` (OpenSSH 9.x): the principal must match a line's
  pattern list; a plain key must equal the line's key; a certificate must be
  signed by a ``cert-authority`` line's key, be a user certificate valid now
  and list the principal itself; the line's ``namespaces`` and
  ``valid-after``/``valid-before`` must allow it. The first line that allows it
  wins.
* ``identify_key`` / ``lookup_key``: who is this SSH login key (sshd's
  ``AuthorizedKeysCommand``)? A plain key listed on a line (not
  ``cert-authority``), or a user certificate signed by a ``cert-authority``
  line's key, valid now, whose principals include the login's Unix user name.
  Namespaces are about signatures and are not consulted for logins; the line's
  validity times are.

Lines that cannot be used are skipped with a warning (``store.warnings``),
like ``ssh-keygen -Y verify`` skips them; skipping a line can only remove
trust. ``TrustStore.load(path, strict=True)`` raises ``TrustError`` instead,
for tools that check the file.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm

from agent import sshsig
from agent.errors import CertificateError, KeyFormatError, TrustError
from agent.sshkeys import fingerprint
from agent.trust.allowed_signers import SignerEntry, parse
from agent.trust.certificate import FOREVER, Certificate, is_certificate_blob
from agent.trust.patterns import MATCH, literal_names, match_pattern_list

MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """Who a trusted key or certificate says the technician is."""

    principal: str
    fingerprint: str  # SHA256:… of the signing (or logging-in) key; a certificate's own key
    via_ca: bool = False
    ca_fingerprint: str | None = None
    key_id: str | None = None  # certificate key id
    extensions: dict[str, str] = field(default_factory=dict)  # certificate extensions
    valid_before: int | None = None  # Unix seconds after which this trust ends, None if unlimited
    principals: tuple[str, ...] = ()  # a certificate's principals
    line: int = 0  # the trusted_technicians line that vouched

    def to_dict(self) -> dict:
        """Plain JSON-ready data."""
        data = asdict(self)
        data["principals"] = list(self.principals)
        return data


def _seconds(now: datetime | float | int | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, datetime):
        return int(now.timestamp())
    return int(now)


def _earliest(*limits: int | None) -> int | None:
    present = [x for x in limits if x is not None]
    return min(present) if present else None


class TrustStore:
    def __init__(self, entries: list[SignerEntry] | tuple[SignerEntry, ...] = (),
                 warnings: list[str] | tuple[str, ...] = (), source: str = "trusted_technicians") -> None:
        self.entries = tuple(entries)
        self.warnings = tuple(warnings)
        self.source = source

    def __len__(self) -> int:
        return len(self.entries)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, source: str = "trusted_technicians", strict: bool = False) -> TrustStore:
        entries, problems = parse(text)
        if strict and problems:
            raise TrustError(f"{problems[0].describe(source)[:300]}; fix or remove that line.")
        return cls(entries, [p.describe(source) for p in problems], source)

    @classmethod
    def load(cls, path: str | Path, strict: bool = False) -> TrustStore:
        """The store in ``path``; a missing file is an empty store."""
        path = Path(path)
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return cls(source=path.name)
        except IsADirectoryError as exc:
            raise TrustError(f"{path} is a folder, not a trusted technicians file; remove it.") from exc
        except OSError as exc:
            raise TrustError(f"Cannot read {path}: {exc.strerror}; check its permissions.") from exc
        if len(raw) > MAX_FILE_BYTES:
            raise TrustError(
                f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; it cannot be a list of keys.")
        return cls.parse(raw.decode("utf-8", "replace"), path.name, strict)

    # --- signatures -------------------------------------------------------------------------
    def verify_signature(self, armored_sig: str | bytes, namespace: str, message: bytes,
                         principal: str, now: datetime | float | int | None = None) -> Identity:
        """The signer's identity if the signature is valid and trusted for ``principal``; TrustError otherwise."""
        try:
            signed = sshsig.verify(armored_sig, namespace, message)
        except (sshsig.SignatureError, KeyFormatError) as exc:
            raise TrustError(f"The signature is not valid: {exc}.") from exc
        except UnsupportedAlgorithm as exc:
            raise TrustError("The signature uses a key type that is not supported.") from exc
        at = _seconds(now)
        blob = signed.public_key_blob
        cert = self._certificate(blob) if is_certificate_blob(blob) else None
        problems: list[str] = []
        for entry in self.entries:
            if match_pattern_list(principal, entry.principals) != MATCH:
                continue
            if entry.cert_authority:
                if cert is None or cert.ca_blob != entry.key_blob:
                    continue
                why = cert.authority_problem(at, principal)
                if why:
                    problems.append(f"The certificate {cert.fingerprint} cannot sign as {principal}: {why}.")
                    continue
            elif entry.key_blob != blob:
                continue
            if entry.namespaces is not None and match_pattern_list(namespace, entry.namespaces) != MATCH:
                problems.append(
                    f"Line {entry.line} of {self.source} does not allow this key to sign for {namespace!r}."
                )
                continue
            if not entry.valid_at(at):
                problems.append(self._line_time_problem(entry, at))
                continue
            return self._identity(entry, principal, blob, cert)
        if problems:
            raise TrustError(problems[0])
        key = cert.fingerprint if cert else fingerprint(blob)
        raise TrustError(f"The key {key} is not trusted for {principal} in {self.source}.")

    # --- logins -----------------------------------------------------------------------------
    def identify_key(self, key_blob: bytes, user: str | None = None,
                     now: datetime | float | int | None = None) -> Identity:
        """Who this login key or certificate is; TrustError (saying why not) if it is not trusted.

        For a certificate, ``user`` (the Unix account being logged into) must be
        among its principals; ``None`` skips that check.
        """
        at = _seconds(now)
        if is_certificate_blob(key_blob):
            return self._identify_certificate(self._certificate(key_blob), user, at)
        problems: list[str] = []
        for entry in self.entries:
            if entry.cert_authority or entry.key_blob != key_blob:
                continue
            if not entry.valid_at(at):
                problems.append(self._line_time_problem(entry, at))
                continue
            names = literal_names(entry.principals)
            return self._identity(entry, names[0] if names else entry.principals, key_blob, None)
        if problems:
            raise TrustError(problems[0])
        raise TrustError(f"The key {fingerprint(key_blob)} is not in {self.source}.")

    def lookup_key(self, key_blob: bytes, user: str | None = None,
                   now: datetime | float | int | None = None) -> Identity | None:
        """``identify_key``, with None for anything not trusted."""
        try:
            return self.identify_key(key_blob, user, now)
        except TrustError:
            return None

    def _identify_certificate(self, cert: Certificate, user: str | None, at: int) -> Identity:
        problems: list[str] = []
        for entry in self.entries:
            if not entry.cert_authority or entry.key_blob != cert.ca_blob:
                continue
            if not entry.valid_at(at):
                problems.append(self._line_time_problem(entry, at))
                continue
            why = cert.authority_problem(at, user)
            if why:
                purpose = f"log in as {user}" if user is not None else "log in"
                problems.append(f"The certificate {cert.fingerprint} cannot {purpose}: {why}.")
                continue
            technician = self._certified_technician(cert, entry, user)
            if technician is None:
                problems.append(
                    f"The certificate {cert.fingerprint} names no technician that line {entry.line} "
                    f"of {self.source} trusts its CA for."
                )
                continue
            return self._identity(entry, technician, cert.blob, cert)
        if problems:
            raise TrustError(problems[0])
        raise TrustError(
            f"The certificate {cert.fingerprint} is signed by CA {cert.ca_fingerprint}, "
            f"which is not a cert-authority in {self.source}."
        )

    @staticmethod
    def _certified_technician(cert: Certificate, entry: SignerEntry, user: str | None) -> str | None:
        """The technician a login certificate names: a principal the CA line trusts that is
        not the login user, else the key id if the line trusts it, else the login user."""
        def trusted(name: str) -> bool:
            return match_pattern_list(name, entry.principals) == MATCH

        for name in cert.principals:
            if name != user and trusted(name):
                return name
        if cert.key_id and trusted(cert.key_id):
            return cert.key_id
        if user is not None and trusted(user):
            return user
        return None

    # --- helpers ----------------------------------------------------------------------------
    def _certificate(self, blob: bytes) -> Certificate:
        try:
            return Certificate.from_blob(blob)
        except CertificateError as exc:
            raise TrustError(f"The certificate is not valid: {exc}.") from exc

    def _line_time_problem(self, entry: SignerEntry, at: int) -> str:
        state = "is not valid yet" if entry.valid_after is not None and at < entry.valid_after else "has expired"
        return f"The trust in this key on line {entry.line} of {self.source} {state}."

    @staticmethod
    def _identity(entry: SignerEntry, principal: str, blob: bytes, cert: Certificate | None) -> Identity:
        if cert is None:
            return Identity(principal=principal, fingerprint=fingerprint(blob),
                            valid_before=entry.valid_before, line=entry.line)
        cert_end = None if cert.valid_before == FOREVER else cert.valid_before
        return Identity(
            principal=principal,
            fingerprint=cert.fingerprint,
            via_ca=True,
            ca_fingerprint=cert.ca_fingerprint,
            key_id=cert.key_id,
            extensions=dict(cert.extensions),
            valid_before=_earliest(cert_end, entry.valid_before),
            principals=cert.principals,
            line=entry.line,
        )
