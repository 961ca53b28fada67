"""The device key: the Ed25519 key that signs this machine's journals and bundles.

Stored in the home as ``device_key`` (OpenSSH private key format, mode 0600,
so ``ssh-keygen -Y sign -f device_key`` works with it too) and
``device_key.pub``. Never overwritten once made.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import sshsig
from agent.errors import HomeError, KeyFileError
from agent.home import Home
from agent.sshkeys import blob_to_line, fingerprint

SESSION_NAMESPACE = "chaperone-session"


def device_principal() -> str:
    """The principal named in a bundle's allowed_signers: ``chaperone@<host>``."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "localhost"
    return f"chaperone@{host}"


@dataclass(frozen=True)
class DeviceKey:
    private_key: ed25519.Ed25519PrivateKey
    principal: str

    @property
    def public_blob(self) -> bytes:
        return sshsig.ed25519_public_blob(self.private_key.public_key())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_blob)

    @property
    def public_line(self) -> str:
        return blob_to_line(self.public_blob, self.principal)

    def fingerprint_line(self) -> str:
        """The line ``ssh-keygen -lf device_key.pub`` prints."""
        return f"256 {self.fingerprint} {self.principal} (ED25519)"

    def allowed_signers_line(self, namespace: str = SESSION_NAMESPACE) -> str:
        return f'{self.principal} namespaces="{namespace}" {blob_to_line(self.public_blob)}'

    def sign(self, message: bytes, namespace: str = SESSION_NAMESPACE) -> str:
        return sshsig.sign(self.private_key, namespace, message)

    # --- storage --------------------------------------------------------------
    @classmethod
    def load(cls, home: Home) -> DeviceKey:
        """Load the key, refusing one that others can read or that is damaged."""
        home.require()
        path = home.key_path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise KeyFileError(
                f"There is no device key in {home.path}; run 'chaperone init --home {home.path}' first."
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"The device key {path} is not a regular file; move it aside and run 'chaperone init'.")
        if os.name == "posix" and st.st_mode & 0o077:
            raise KeyFileError(
                f"The device key {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run 'chmod 600 {path}'."
            )
        try:
            data = path.read_bytes()
        except PermissionError:
            raise KeyFileError(
                f"Cannot read the device key {path}: permission denied; run Chaperone as its owner.") from None
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except (ValueError, TypeError, IndexError):
            raise KeyFileError(
                f"The device key {path} is damaged; move it aside and run 'chaperone init' "
                "to make a new one (logs signed with the old key stay checkable with its public key)."
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"The device key {path} is not an Ed25519 key; move it aside and run 'chaperone init'.")
        comment = _comment_of(home)
        return cls(private_key=key, principal=comment or device_principal())

    @classmethod
    def init(cls, home: Home) -> tuple[DeviceKey, bool]:
        """Load the key, or make it if missing. Returns (key, created)."""
        home.create()
        if home.key_path.exists() or home.key_path.is_symlink():
            return cls.load(home), False
        if not os.access(home.path, os.W_OK):
            raise HomeError(
                f"The Chaperone home {home.path} is read-only; make it writable or pass --home with another folder."
            )
        key = ed25519.Ed25519PrivateKey.generate()
        device = cls(private_key=key, principal=device_principal())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        try:
            # O_EXCL: never overwrite a key another process made meanwhile.
            fd = os.open(home.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(home), False
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            tmp = home.pub_path.with_suffix(".pub.tmp")
            tmp.write_text(device.public_line + "\n", encoding="ascii")
            os.replace(tmp, home.pub_path)
        except OSError as exc:
            home.key_path.unlink(missing_ok=True)
            raise HomeError(f"Cannot write the device key in {home.path}: {exc.strerror}.") from exc
        return device, True


def _comment_of(home: Home) -> str | None:
    try:
        parts = home.pub_path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    return parts[2] if len(parts) >= 3 else None
