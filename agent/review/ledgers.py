"""The devices' published ledgers, checked against the bundles: what is missing, pruned, forked or unwitnessed.

A ledger comes from a ``chaperone ledger export`` folder found under a
source (``origin``, ``vkey``, ``entries``, ``checkpoint``, ``cosigned/``),
or from the store's ``<device>/ledger/`` pieces (``agent.publish.ledger_files``).
Its heads are checked with its own verifier key (C2SP signed notes,
``agent.ledger``), and the entries against every head's root (RFC 6962).
Then, per device:

- ``missing``: a session whose seal is in the ledger but no bundle is in the sources;
- ``pruned``: the same, with a retention ``prune`` entry for it (policy, not a loss);
- ``fork``: two heads of one size with different roots, or entries that do not hash to a signed head's root
  (the history was rewritten), or published entries that stop short of a signed head;
- ``unwitnessed``: entries after the last head cosigned by a witness (by the ``--witness`` keys when given).

The ledger's verifier key must be trusted from elsewhere (the device's "This device" view): a ledger whose
heads are signed by another key than the one its bundles' evidence names is flagged too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agent.errors import NoteError
from agent.ledger import Checkpoint, leaf_hash, vkey_verifier
from agent.ledger.merkle import node_hash
from agent.ledger.note import open_note, parse_note, verified_by

#: The largest ledger (entries) read for a review.
MAX_ENTRIES = 5_000_000


@dataclass
class DeviceLedger:
    label: str
    origin: str = ""
    vkey: str = ""
    entries: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)  # signed and cosigned notes
    problem: str | None = None  # it could not be read


def read_export(folder: Path) -> DeviceLedger:
    """A ``chaperone ledger export`` folder."""
    ledger = DeviceLedger(str(folder))
    try:
        ledger.origin = (folder / "origin").read_text(encoding="utf-8").strip()
        ledger.vkey = (folder / "vkey").read_text(encoding="utf-8").strip()
        with open(folder / "entries", "rb") as stream:
            ledger.entries = [line.rstrip(b"\n") for line in stream][:MAX_ENTRIES]
        heads = [folder / "checkpoint"] if (folder / "checkpoint").is_file() else []
        if (folder / "cosigned").is_dir():
            heads += sorted(p for p in (folder / "cosigned").iterdir() if p.is_file())
        ledger.heads = [p.read_bytes() for p in heads]
    except (OSError, UnicodeDecodeError) as exc:
        ledger.problem = f"the ledger export {folder} cannot be read ({exc})"
    return ledger


def is_export(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("origin", "vkey", "entries"))


def _prefix_roots(entries: list[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """The RFC 6962 root of the first n entries, for each n in ``sizes`` (one pass)."""
    wanted = sorted({n for n in sizes if 0 < n <= len(entries)})
    roots: dict[int, bytes] = {}
    stack: list[bytes] = []  # roots of the complete subtrees so far, largest first
    for i, entry in enumerate(entries[: wanted[-1]] if wanted else []):
        stack.append(leaf_hash(entry))
        n = i + 1
        while n % 2 == 0:
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
            n //= 2
        if wanted and i + 1 == wanted[0]:
            h = stack[-1]
            for left in reversed(stack[:-1]):
                h = node_hash(left, h)
            roots[i + 1] = h
            wanted.pop(0)
    return roots


def _fields(entry: bytes) -> tuple[str, str, dict]:
    try:
        record = orjson.loads(entry)
    except orjson.JSONDecodeError:
        return "", "", {}
    if not isinstance(record, dict):
        return "", "", {}
    data: dict = record["data"] if isinstance(record.get("data"), dict) else {}
    return str(record.get("type") or ""), str(record.get("session") or ""), data


def check(ledgers: list[DeviceLedger], bundles: list[dict], witnesses: tuple[str, ...] = ()) -> list[dict]:
    """The problems the ledgers show about the bundles (``{"kind","session","device","file","detail"}``)."""
    problems: list[dict] = []
    have = {(b.get("device"), b.get("session")) for b in bundles if b.get("readable")}
    try:
        required = [vkey_verifier(v) for v in witnesses]
    except NoteError:
        required = []
    for ledger in ledgers:
        problems.extend(_check_one(ledger, have, required))
    return problems


def _problem(kind: str, ledger: DeviceLedger, detail: str, session: str | None = None,
             device: str | None = None) -> dict:
    return {"kind": kind, "session": session, "device": device, "file": ledger.label, "detail": detail}


def _check_one(ledger: DeviceLedger, have: set, required: list) -> list[dict]:
    if ledger.problem:
        return [_problem("unreadable", ledger, ledger.problem[0].upper() + ledger.problem[1:] + ".")]
    seals: dict[str, tuple[int, str]] = {}  # session -> (index, device key)
    pruned: set[str] = set()
    keys: dict[str, int] = {}
    for index, entry in enumerate(ledger.entries):
        kind, session, data = _fields(entry)
        if kind == "seal" and session:
            seals[session] = (index, str(data.get("key") or ""))
            keys[str(data.get("key") or "")] = keys.get(str(data.get("key") or ""), 0) + 1
        elif kind == "prune" and isinstance(data.get("session"), str):
            pruned.add(data["session"])
    device = max(keys, key=lambda k: keys[k]) if keys else None
    out: list[dict] = []
    try:
        log_key = vkey_verifier(ledger.vkey)
    except NoteError as exc:
        return [_problem("unreadable", ledger, f"Its verifier key cannot be used ({exc}).", device=device)]
    heads: dict[int, set[bytes]] = {}
    cosigned_sizes: list[int] = []
    for raw in ledger.heads:
        try:
            note, _ = open_note(raw, [log_key])
            head = Checkpoint.from_note(note)
        except NoteError as exc:
            out.append(_problem("fork", ledger, f"A head is not signed by the ledger's key {ledger.vkey} ({exc}): "
                                                "someone else's history, or a forged one.", device=device))
            continue
        if head.origin != ledger.origin:
            out.append(_problem("fork", ledger, f"A head names the origin {head.origin}, not {ledger.origin}.",
                                device=device))
            continue
        heads.setdefault(head.size, set()).add(head.root)
        parsed = parse_note(raw)
        signers = {(s.name, s.key_id) for s in parsed.signatures} - {(log_key.name, log_key.key_id)}
        try:
            ok = len(verified_by(parsed, required)) == len(required) if required else bool(signers)
        except NoteError:
            ok = False
        if ok:
            cosigned_sizes.append(head.size)
    roots = _prefix_roots(ledger.entries, heads)
    for size, found in sorted(heads.items()):
        if len(found) > 1:
            out.append(_problem("fork", ledger, f"Two signed heads of size {size} have different roots: the "
                                                "device's history was forked.", device=device))
        if size > len(ledger.entries):
            out.append(_problem("fork", ledger, f"A signed head covers {size} entries but only "
                                                f"{len(ledger.entries)} are published: entries were withheld.",
                                device=device))
        elif roots.get(size) not in found:
            out.append(_problem("fork", ledger, f"The published entries do not hash to the signed head of size "
                                                f"{size}: the history was rewritten.", device=device))
    for session, (index, key) in sorted(seals.items(), key=lambda s: s[1][0]):
        if (key, session) in have:
            continue
        if session in pruned:
            out.append(_problem("pruned", ledger, f"Session {session} was pruned by the device's retention policy "
                                                  "(a prune entry in its ledger); its bundle is not in the sources.",
                                session, key))
        else:
            out.append(_problem("missing", ledger, f"The device's ledger holds the seal of session {session} "
                                                   f"(entry {index}), but no bundle of it is in the sources.",
                                session, key))
    covered = max(cosigned_sizes, default=0)
    if covered < len(ledger.entries):
        tail = [s for s, (i, _) in seals.items() if i >= covered]
        who = "the required witnesses" if required else "any witness"
        out.append(_problem("unwitnessed", ledger, f"Entries {covered} to {len(ledger.entries) - 1} are not in a "
                                                   f"head cosigned by {who}"
                                                   + (f" (the seals of {', '.join(tail[:5])})" if tail else "")
                                                   + ".", device=device))
    return out
