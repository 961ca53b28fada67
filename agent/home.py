"""The home folder: where the device key, journals, history, socket and settings live.

Resolved from ``--home DIR``, else ``$CHAPERONE_HOME``, else the platform's
user data folder. Every path the core uses is a property of ``Home`` so that
tests and scripts can point everything at a temporary folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.errors import HomeError
from agent.settings import Settings, load_settings

ENV_VAR = "CHAPERONE_HOME"


def default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("chaperone", appauthor=False))


def resolve_home(arg: str | os.PathLike | None = None) -> Path:
    if arg:
        return Path(arg).expanduser().absolute()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    return default_home()


@dataclass(frozen=True)
class Home:
    path: Path

    @classmethod
    def at(cls, arg: str | os.PathLike | None = None) -> Home:
        return cls(resolve_home(arg))

    # --- layout -----------------------------------------------------------
    @property
    def key_path(self) -> Path:
        return self.path / "device_key"

    @property
    def pub_path(self) -> Path:
        return self.path / "device_key.pub"

    @property
    def sessions_dir(self) -> Path:
        return self.path / "sessions"

    def session_dir(self, session_id: str) -> Path:
        return self.sessions_dir / session_id

    def journal_path(self, session_id: str) -> Path:
        return self.session_dir(session_id) / "session.jsonl"

    @property
    def unattended_journal_path(self) -> Path:
        """Alarms raised while no session is active (remote access without consent)."""
        return self.path / "unattended" / "unattended.jsonl"

    @property
    def db_path(self) -> Path:
        return self.path / "history.sqlite3"

    @property
    def socket_path(self) -> Path:
        return self.path / "agent.sock"

    @property
    def lock_path(self) -> Path:
        return self.path / "agent.lock"

    @property
    def settings_path(self) -> Path:
        return self.path / "settings.json"

    @property
    def trusted_technicians_path(self) -> Path:
        return self.path / "trusted_technicians"

    # --- checks -----------------------------------------------------------
    def create(self) -> None:
        """Make the home (mode 0700) if missing."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except PermissionError as exc:
            raise HomeError(
                f"Cannot create the Chaperone home {self.path}: permission denied; "
                "pass --home with a folder you can write."
            ) from exc
        except OSError as exc:
            raise HomeError(f"Cannot create the Chaperone home {self.path}: {exc.strerror}.") from exc
        if not self.path.is_dir():
            raise HomeError(f"The Chaperone home {self.path} is not a folder; pass --home with a folder.")

    def require(self) -> None:
        """Raise a HomeError unless the home exists and holds a device key."""
        if not self.path.exists():
            raise HomeError(
                f"There is no Chaperone home at {self.path}; run 'chaperone init --home {self.path}' first."
            )
        if not self.path.is_dir():
            raise HomeError(f"The Chaperone home {self.path} is not a folder; pass --home with a folder.")
        if not os.access(self.path, os.R_OK | os.X_OK):
            raise HomeError(f"Cannot read the Chaperone home {self.path}; check its permissions.")

    def require_writable(self) -> None:
        self.require()
        if not os.access(self.path, os.W_OK):
            raise HomeError(
                f"The Chaperone home {self.path} is read-only; make it writable or pass --home with another folder."
            )

    # --- settings -----------------------------------------------------------
    def settings(self) -> Settings:
        """The home's settings (``settings.json``, read and validated now); the defaults when absent.

        A file that cannot be read or holds a bad value raises ``SettingsError`` naming the key."""
        return load_settings(self.settings_path)
