"""The ledger's evidence in a bundle: what ``export`` adds and what ``verify`` checks.

Two files, listed in ``SHA256SUMS`` when present:

``ledger.proof``
    A C2SP tlog-proof (``c2sp.org/tlog-proof@v1``) of the journal's seal line
    (the last line of ``session.jsonl``, without its newline) in the earliest
    cosigned ledger head that holds it: the index, the inclusion proof, then
    the checkpoint note with the ledger's signature and the witnesses'
    cosignatures. Without a cosigned head, the newest head the ledger signed
    (then the bundle is "not yet witnessed").
``ledger.checkpoints``
    The same evidence for every ``checkpoint`` line of the journal, as canonical
    JSON: ``{"heads": [notes], "lines": [{"seq", "index", "head", "proof"}],
    "origin", "v": 1}`` (``head`` indexes ``heads``; ``proof`` is base64 hashes).

Why every checkpoint. Whoever holds the device key and the ledger key can
rebuild a journal and append its new lines to the ledger, and a witness will
cosign that append: an append-only log stops no one from adding. What they
cannot do is make a witness cosign, in the past, a head that holds their new
lines. A cosignature carries the time the witness saw the head, so ``verify
--witness`` requires each checkpoint and the seal to be in a head that each
required witness cosigned within ``max_lag`` seconds of the line's own time,
every record to be followed by such a checkpoint within ``COVER_S`` seconds,
and no two checkpoints to be more than ``MAX_GAP_S`` apart (while a session
runs, the agent writes one at least every 30 s, events or not). A record
removed after it was witnessed changes every later checkpoint, whose rebuilt
lines can only be cosigned now: long after the times they claim, or, if the
forger moves those times to now as well, after a gap no genuine journal has.
What is left unprotected is what the threat model says: the records after
the last checkpoint witnessed in time, which whoever holds the key can still
rewrite in real time. ``witnessed_through`` is that point.

The witnesses vouch for the log's key (they cosign only heads signed by the
key they trust for the origin), so the ledger's own signature is not checked
here; the origin must be the device's (``chaperone.local/device/<its
fingerprint>``) or the one the verifier names.
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.canonical import canonical_bytes
from agent.clock import parse_rfc3339
from agent.errors import FormatError, UsageError
from agent.journal.reader import match_tail, parse_record
from agent.ledger import Checkpoint, CosignedHead, Ledger, SignedHead, TlogProof, default_origin, leaf_hash
from agent.ledger.cosignature import CosignatureVerifier, cosignature_time
from agent.ledger.merkle import verify_inclusion
from agent.ledger.note import Note, NoteError, parse_note, verified_by

PROOF = "ledger.proof"
CHECKPOINTS = "ledger.checkpoints"
#: How long after its own time a checkpoint may first be cosigned and still count as witnessed in time.
DEFAULT_MAX_LAG = 300.0
#: How long a record may wait for the checkpoint that covers it (the journal writes one every 5 s).
COVER_S = 60.0
#: The longest time between two checkpoints of a journal (the agent writes one at least every 30 s).
MAX_GAP_S = 120.0
SIGNED_TYPES = (b"checkpoint", b"seal")


def envelope(line: bytes) -> tuple[int, str, str]:
    """``(seq, ts, type)`` of a journal line (already verified)."""
    tail = match_tail(line)
    if tail is not None:
        _, seq, _, ts, kind = tail
        return int(seq), ts.decode("ascii"), kind.decode("ascii")
    record = parse_record(line)
    return int(record["seq"]), str(record["ts"]), str(record["type"])


# --- export ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """What ``collect_evidence`` found: the two files' bytes (None when there is nothing to put in them)."""

    proof: bytes | None
    checkpoints: bytes | None
    seal_index: int | None
    witnessed_by: tuple[str, ...]  # the witnesses whose cosignature is on the seal's head
    lines: int  # signed lines in the journal
    found: int  # how many of them the ledger holds

    @property
    def witnessed(self) -> bool:
        return bool(self.witnessed_by)


def _heads_by_size(ledger: Ledger) -> list[CosignedHead]:
    latest: dict[int, CosignedHead] = {}
    for head in ledger.cosigned_heads():
        if head.checkpoint.origin == ledger.origin:
            latest[head.size] = head  # the last record of a head holds all its cosignatures
    return [latest[size] for size in sorted(latest)]


def collect_evidence(ledger: Ledger, journal_lines: Iterable[bytes]) -> Evidence:
    """The ledger's evidence for a sealed journal (its lines, with their newlines)."""
    signed: list[tuple[int, bytes]] = []
    last: bytes | None = None
    for line in journal_lines:
        last = line
        if any(b'"type":"%s"' % t in line for t in SIGNED_TYPES):
            seq, _, kind = envelope(line)
            if kind in ("checkpoint", "seal"):
                signed.append((seq, line.rstrip(b"\n")))
    if last is None or not signed or signed[-1][1] != last.rstrip(b"\n"):
        raise UsageError("The journal does not end with its seal, so it has no ledger evidence.")
    where = ledger.find((line for _, line in signed), newest=False)  # the first time it was logged
    heads = _heads_by_size(ledger)
    sizes = [h.size for h in heads]
    used: dict[bytes, int] = {}
    entries = []
    seal_seq, seal_line = signed[-1]
    proof = None
    witnessed_by: tuple[str, ...] = ()
    seal_index = where.get(seal_line)
    for seq, line in signed:
        index = where.get(line)
        if index is None:
            continue
        k = bisect.bisect_right(sizes, index)
        head: CosignedHead | SignedHead | None = heads[k] if k < len(heads) else None
        if seq == seal_seq:
            if head is None and ledger.last_signed is not None and ledger.last_signed.size > index:
                head = ledger.last_signed  # signed, not yet witnessed
            if head is not None:
                proof = ledger.tlog_proof(index, head)
                witnessed_by = head.witnesses if isinstance(head, CosignedHead) else ()
            continue
        if head is None:
            continue
        slot = used.setdefault(head.note, len(used))
        hashes = ledger.inclusion_proof(index, head.size)
        entries.append({"head": slot, "index": index, "proof": [base64.b64encode(h).decode("ascii") for h in hashes],
                        "seq": seq})
    checkpoints = None
    if entries:
        checkpoints = canonical_bytes({"heads": [n.decode("utf-8") for n in used], "lines": entries,
                                       "origin": ledger.origin, "v": 1}) + b"\n"
    return Evidence(proof, checkpoints, seal_index, tuple(witnessed_by), len(signed), len(where))


# --- verify --------------------------------------------------------------------------------------

@dataclass
class WitnessReport:
    """What ``check_evidence`` found. ``problem`` is the first thing that stops the bundle from being
    witnessed as required (None when it is), as one sentence."""

    present: bool = False
    origin: str | None = None
    origin_is_device: bool = False
    cosigners: tuple[str, ...] = ()  # names on the seal's head (checked only when verifiers are given)
    checked: tuple[str, ...] = ()  # required witnesses whose cosignature on the seal's head verified
    seal_cosigned: dict[str, int] = field(default_factory=dict)  # witness -> POSIX time of its cosignature
    witnessed_through: int | None = None  # the last seq every record up to which was witnessed in time
    last_seq: int | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None and self.witnessed_through is not None and self.witnessed_through == self.last_seq

    def to_json(self) -> dict:
        return {"present": self.present, "origin": self.origin, "origin_is_device": self.origin_is_device,
                "cosigners": list(self.cosigners), "checked": list(self.checked),
                "seal_cosigned": self.seal_cosigned, "witnessed_through": self.witnessed_through,
                "last_seq": self.last_seq, "complete": self.complete, "problem": self.problem}


class _Heads:
    """Parsed head notes, their checkpoints, and each required witness's cosignature time on them."""

    def __init__(self, verifiers: Sequence[CosignatureVerifier]) -> None:
        self.verifiers = verifiers
        self._cache: dict[bytes, tuple[Checkpoint, dict[str, int]]] = {}

    def read(self, note_bytes: bytes) -> tuple[Checkpoint, dict[str, int], Note]:
        note = parse_note(note_bytes)
        cached = self._cache.get(note_bytes)
        if cached is not None:
            return cached[0], cached[1], note
        cp = Checkpoint.from_note(note)
        times: dict[str, int] = {}
        for v in self.verifiers:
            mine = [s for s in note.signatures if (s.name, s.key_id) == (v.name, v.key_id)]
            if not mine:
                raise NoteError(f"it is not cosigned by the witness {v.name}")
            if not verified_by(Note(note.text, tuple(mine)), [v]):
                raise NoteError(f"the cosignature by {v.name} does not verify")
            times[v.name] = min(cosignature_time(s) for s in mine)
        self._cache[note_bytes] = (cp, times)
        return cp, times, note


def _b64_hashes(items: object) -> list[bytes]:
    if not isinstance(items, list) or not all(isinstance(h, str) for h in items):
        raise FormatError("a proof is a list of base64 hashes")
    try:
        return [base64.b64decode(h, validate=True) for h in items]
    except ValueError:
        raise FormatError("a proof hash is not base64") from None


def _read_checkpoints(data: bytes | None) -> tuple[list[bytes], dict[int, dict]]:
    if data is None:
        return [], {}
    try:
        obj = json.loads(data)
        heads = [h.encode("utf-8") for h in obj["heads"]]
        lines = {int(e["seq"]): e for e in obj["lines"]}
        for e in lines.values():
            if not (isinstance(e["index"], int) and isinstance(e["head"], int) and 0 <= e["head"] < len(heads)):
                raise FormatError("a line's index or head is out of range")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FormatError(f"{CHECKPOINTS} is not the JSON a bundle holds ({exc})") from None
    return heads, lines


def check_evidence(journal_lines: Iterable[bytes], proof: bytes | None, checkpoints: bytes | None,
                   verifiers: Sequence[CosignatureVerifier], *, device_fingerprint: str,
                   origin: str | None = None, max_lag: float = DEFAULT_MAX_LAG) -> WitnessReport:
    """Check the ledger evidence of a bundle whose journal is already verified (see the docstring).

    With ``verifiers`` (the witnesses the reader requires), cosignatures are checked and the walk
    computes ``witnessed_through``; without, only the shape and the inclusion proofs are checked and
    ``cosigners`` lists the names on the seal's head as the bundle claims them."""
    report = WitnessReport(present=proof is not None)
    if proof is None:
        report.problem = (f"The bundle has no {PROOF}: its seal was not in this device's ledger when it was "
                          "exported, so nothing shows its records left the machine.")
        return report
    heads = _Heads(verifiers)
    try:
        tlog = TlogProof.parse(proof)
        seal_cp, seal_times, seal_note = heads.read(tlog.checkpoint)
        cp_heads, cp_lines = _read_checkpoints(checkpoints)
    except (NoteError, FormatError) as exc:
        report.problem = f"{PROOF} or {CHECKPOINTS} cannot be used: {str(exc).rstrip('.')}."
        return report
    report.origin = seal_cp.origin
    report.origin_is_device = seal_cp.origin == default_origin(device_fingerprint)
    report.cosigners = tuple(s.name for s in seal_note.signatures if s.name != seal_cp.origin)
    report.checked = tuple(seal_times)
    report.seal_cosigned = seal_times
    expected = origin or default_origin(device_fingerprint)
    if seal_cp.origin != expected:
        report.problem = (f"The ledger proof is for the ledger {seal_cp.origin}, not {expected}"
                          + ("" if origin else " (the ledger of the key that signed the bundle)") + ".")
        return report
    _walk(journal_lines, tlog, seal_cp, cp_heads, cp_lines, heads, report, max_lag)
    return report


def _walk(journal_lines: Iterable[bytes], tlog: TlogProof, seal_cp: Checkpoint, cp_heads: list[bytes],
          cp_lines: dict[int, dict], heads: _Heads, report: WitnessReport, max_lag: float) -> None:
    timed = bool(heads.verifiers)
    pending: float | None = None  # the time of the oldest record no timely checkpoint covers yet
    previous: float | None = None  # the time of the last checkpoint
    failed = False
    last_line = b""
    for raw in journal_lines:  # streamed: one pass
        last_line = raw
        seq, ts_text, kind = envelope(raw)
        report.last_seq = seq
        ts = parse_rfc3339(ts_text).timestamp()
        if kind not in ("checkpoint", "seal"):
            if pending is None:
                pending = ts
            continue
        if failed:
            continue
        line = raw.rstrip(b"\n")
        try:
            if kind == "seal":
                cp, times = seal_cp, report.seal_cosigned
                verify_inclusion(tlog.proof, tlog.index, cp.size, leaf_hash(line), cp.root)
            else:
                entry = cp_lines.get(seq)
                if entry is None:
                    raise NoteError(f"the checkpoint at seq {seq} has no ledger evidence")
                cp, times, _ = heads.read(cp_heads[entry["head"]])
                if cp.origin != seal_cp.origin:
                    raise NoteError(f"the checkpoint at seq {seq} is proved in another ledger")
                verify_inclusion(_b64_hashes(entry["proof"]), entry["index"], cp.size, leaf_hash(line), cp.root)
        except (NoteError, FormatError, ValueError) as exc:
            failed = True
            report.problem = f"The ledger evidence for seq {seq} does not hold: {str(exc).rstrip('.')}."
            continue
        if not timed:
            continue
        late = {name: t - ts for name, t in times.items() if t - ts > max_lag}
        if late:
            name, lag = max(late.items(), key=lambda kv: kv[1])
            failed = True
            report.problem = (f"The {kind} at seq {seq} was first cosigned by {name} {lag:.0f} s after it was "
                              f"written (more than {max_lag:.0f} s): records from there on could have been "
                              "rewritten by whoever holds the device key before they were witnessed.")
            continue
        if pending is not None and ts - pending > COVER_S:
            failed = True
            report.problem = (f"Records before seq {seq} waited {ts - pending:.0f} s for a checkpoint (more "
                              f"than {COVER_S:.0f} s), so they were not witnessed in time.")
            continue
        if previous is not None and ts - previous > MAX_GAP_S:
            failed = True
            report.problem = (f"There was no checkpoint for {ts - previous:.0f} s before seq {seq} (more than "
                              f"{MAX_GAP_S:.0f} s: the agent was stopped, or the journal was rebuilt), so the "
                              "records from there on were not witnessed in time.")
            continue
        report.witnessed_through = seq
        pending = None
        previous = ts
    if not last_line:
        report.problem = report.problem or "The journal is empty."
