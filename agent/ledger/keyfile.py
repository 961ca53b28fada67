"""Ed25519 private keys in files only their owner can read (the ledger's key, a witness's key).

A key file is PKCS#8 PEM (``openssl pkey -in FILE`` reads it), mode 0600,
made with ``O_EXCL`` (two processes making it at once end up with one key) and
synced before it is used. Loading refuses a file that others can read, a
symlink, or anything that is not an Ed25519 key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent.errors import ChaperoneError


def load_key(path: Path, what: str, error: type[ChaperoneError]) -> ed25519.Ed25519PrivateKey:
    """The key in ``path``; ``error`` (one sentence naming ``what``) if it is missing, exposed or damaged."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"There is no {what} at {path}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"The {what} {path} is not a regular file; move it aside.")
    if os.name == "posix" and st.st_mode & 0o077:
        raise error(f"The {what} {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}); "
                    f"run 'chmod 600 {path}'.")
    try:
        data = path.read_bytes()
    except PermissionError:
        raise error(f"Cannot read the {what} {path}: permission denied; run Chaperone as its owner.") from None
    except OSError as exc:
        raise error(f"Cannot read the {what} {path}: {exc.strerror}.") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise error(f"The {what} {path} is damaged; move it aside (a new key means a new verifier key).") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise error(f"The {what} {path} is not an Ed25519 key; move it aside.")
    return key


def load_or_make_key(path: Path, what: str, error: type[ChaperoneError]) -> tuple[ed25519.Ed25519PrivateKey, bool]:
    """The key in ``path``, made first if there is none: ``(key, created)``."""
    if os.path.lexists(path):
        return load_key(path, what, error), False
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return load_key(path, what, error), False
    except OSError as exc:
        raise error(f"Cannot make the {what} {path}: {exc.strerror}.") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise error(f"Cannot write the {what} {path}: {exc.strerror}.") from None
    return key, True
