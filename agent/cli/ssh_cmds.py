"""``chaperone ssh-authorize USER KEY TYPE FINGERPRINT``: sshd's AuthorizedKeysCommand.

sshd gives it ``%u %k %t %f`` and no environment, so the drop-in passes
``--home`` explicitly. It prints one authorized_keys line if the customer
allowed this login, and nothing otherwise; it always exits 0, and never runs
longer than the home's ``ssh.consent_wait_s`` plus a few seconds, so that
sshd is never held past its LoginGraceTime. Why a login was refused goes to
stderr (sshd logs it) and, for unknown keys, to the unattended journal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from agent.cli import home_of
from agent.errors import ChaperoneError, user_message
from agent.settings import SSHSettings

WATCHDOG_MARGIN_S = 15


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "ssh-authorize", parents=[common],
        help="for sshd's AuthorizedKeysCommand %%u %%k %%t %%f: ask for consent, print a key line only if allowed",
    )
    p.add_argument("user", metavar="USER", help="the account being logged into (%%u)")
    p.add_argument("key", metavar="KEY", help="the offered key or certificate, base64 (%%k)")
    p.add_argument("key_type", metavar="TYPE", help="its type (%%t)")
    p.add_argument("fingerprint", metavar="FINGERPRINT", help="its fingerprint (%%f)")
    p.set_defaults(func=run)


def _give_up(signum, frame):  # pragma: no cover - only when the agent hangs past every timeout
    os._exit(0)


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="chaperone ssh-authorize: %(message)s", stream=sys.stderr)
    # sshd waits on this command at every login: only ssh-authorize loads the SSH part (and the
    # other commands start without it).
    from agent.ssh.authorize import Authorizer, LoginAttempt
    from agent.ssh.state import ProcessRef

    try:
        home = home_of(args)
        try:
            wait_s = home.settings().ssh.consent_wait_s
        except ChaperoneError:  # the authorizer refuses the login and says why
            wait_s = SSHSettings().consent_wait_s
        signal.signal(signal.SIGALRM, _give_up)
        signal.alarm(int(wait_s) + WATCHDOG_MARGIN_S)
        attempt = LoginAttempt(user=args.user, key_b64=args.key, key_type=args.key_type,
                               fingerprint=args.fingerprint, sshd=ProcessRef.of(os.getppid()))
        line = Authorizer(home).authorize(attempt)
        if line:
            print(line, flush=True)
    except Exception as exc:  # noqa: BLE001 - sshd must always get exit 0 and no stray output
        print(f"chaperone ssh-authorize: refused. {user_message(exc)}", file=sys.stderr)
    return 0
