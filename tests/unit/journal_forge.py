"""The technician's tool, for attack tests: write any journal, with any times, signed by a device key.

``forge(session, device_key, records)`` returns the bytes of a journal whose
chain, checkpoints and seal are all valid for ``device_key``: ``records`` is a
list of ``(type, data, ts)`` where ``ts`` is a POSIX time; ``checkpoint`` and
``seal`` records get their ``count``, ``head``, ``key`` and SSHSIG like the
real writer's. Whoever holds the device key can do exactly this.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from hashlib import sha256

from agent.canonical import canonical_bytes
from agent.journal.format import ZERO_HASH, checkpoint_message


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def forge(session: str, device_key, records: list[tuple[str, dict, float]]) -> bytes:
    out = []
    head = ZERO_HASH
    for seq, (kind, data, ts) in enumerate(records):
        data = dict(data)
        if seq == 0:
            data = {"device": device_key.fingerprint, "principal": device_key.principal, "software": "forge",
                    **data}
        if kind in ("checkpoint", "seal"):
            data.update(count=seq, head=head, key=device_key.fingerprint)
            record = {"data": data, "seq": seq, "session": session, "ts": rfc3339(ts), "type": kind}
            data["sig"] = device_key.sign(checkpoint_message(record))
        line = (b'{"data":%s,"prev":"%s","seq":%d,"session":%s,"ts":"%s","type":%s,"v":1}\n'
                % (canonical_bytes(data), head.encode(), seq, json.dumps(session).encode(), rfc3339(ts).encode(),
                   json.dumps(kind).encode()))
        out.append(line)
        head = sha256(line).hexdigest()
    return b"".join(out)
