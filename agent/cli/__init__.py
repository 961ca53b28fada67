"""The ``chaperone`` command line.

Commands live in modules named ``*_cmds.py`` in this package; each exposes
``register(subparsers, common)`` that adds its sub-commands with
``set_defaults(func=handler)``. A handler takes the parsed arguments and
returns the exit code. ``--home`` is accepted before or after the command's
name. A ``ChaperoneError`` becomes one sentence on stderr and its exit code;
nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback

from agent import __version__
from agent.api.client import AgentClient
from agent.errors import ChaperoneError, user_message
from agent.home import Home


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="the Chaperone home folder (default: $CHAPERONE_HOME, else the platform's data folder)",
    )
    common.add_argument(
        "--system",
        action="store_true",
        default=argparse.SUPPRESS,
        help="talk to the system agent through its customer socket ($CHAPERONE_SYSTEM_SOCKET, "
             "else /run/chaperone/customer.sock)",
    )
    return common


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one plain sentence, exit 2 (argparse's own convention)
        self.exit(2, f"chaperone: {message[0].upper() + message[1:]}. See '{self.prog} --help'.\n")


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = _Parser(
        prog="chaperone",
        description="Consent, capture and a signed log for remote-support sessions.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"chaperone {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.endswith("_cmds"):
            importlib.import_module(f"agent.cli.{info.name}").register(subparsers, common)
    return parser


def home_of(args: argparse.Namespace) -> Home:
    return Home.at(getattr(args, "home", None))


def client_of(args: argparse.Namespace, timeout: float = 5.0) -> AgentClient:
    """The agent a command talks to: the system agent with ``--system``, else the home's."""
    if getattr(args, "system", False):
        return AgentClient.system(timeout)
    return AgentClient(home_of(args), timeout)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ChaperoneError as exc:
        print(f"chaperone: {user_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("chaperone: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `chaperone sessions | head`): not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - a bug, not a user's mistake: one line, details on request
        if os.environ.get("CHAPERONE_DEBUG"):
            traceback.print_exc()
        print(f"chaperone: {user_message(exc)}", file=sys.stderr)
        return 70
