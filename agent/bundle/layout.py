"""What a bundle holds, and the small text files in it.

A bundle is a zip (or a folder) with exactly ``FILES``. ``SHA256SUMS`` lists
every other file in ``sha256sum`` format; ``SHA256SUMS.sig`` is an SSHSIG over
it (namespace ``chaperone-session``) by the device key in ``allowed_signers``.
"""

from __future__ import annotations

import re
import shlex
import textwrap

from agent.errors import LayoutError
from agent.journal import NAMESPACE

JOURNAL = "session.jsonl"
SUMS = "SHA256SUMS"
SIG = "SHA256SUMS.sig"
SIGNERS = "allowed_signers"
REPORT = "report.html"
VERIFY = "VERIFY.txt"
LEDGER_PROOF = "ledger.proof"
LEDGER_CHECKPOINTS = "ledger.checkpoints"
FILES = (JOURNAL, SUMS, SIG, SIGNERS, REPORT, VERIFY)
#: Files a bundle holds when the device's ledger had evidence for it (listed in SHA256SUMS when present).
OPTIONAL = (LEDGER_PROOF, LEDGER_CHECKPOINTS)
#: The files SHA256SUMS lists, in the order it lists them (then those of OPTIONAL that are present).
SUMMED = (JOURNAL, REPORT, VERIFY, SIGNERS)

#: Size limits when reading a bundle (a guard against zip bombs).
MAX_SIZE = {JOURNAL: 8 << 30, REPORT: 8 << 30, SUMS: 64 << 10, SIG: 64 << 10, SIGNERS: 64 << 10, VERIFY: 1 << 20,
            LEDGER_PROOF: 1 << 20, LEDGER_CHECKPOINTS: 256 << 20}
#: The largest compression ratio accepted for a member above 1 MiB.
MAX_RATIO = 200

_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\r\n]+)\n")
PRINCIPAL = re.compile(r"[A-Za-z0-9@._+-]{1,200}")
_SIGNERS_LINE = re.compile(
    r'([A-Za-z0-9@._+-]{1,200}) namespaces="' + re.escape(NAMESPACE) + r'" (ssh-ed25519 [A-Za-z0-9+/]+=*)\n'
)


def sums_text(digests: dict[str, str]) -> bytes:
    """``SHA256SUMS`` for the digests of ``SUMMED`` and of the ``OPTIONAL`` files present."""
    names = [*SUMMED, *(name for name in OPTIONAL if name in digests)]
    return "".join(f"{digests[name]}  {name}\n" for name in names).encode("ascii")


def parse_sums(raw: bytes) -> dict[str, str]:
    """Name -> hex digest from a ``SHA256SUMS`` that lists exactly ``SUMMED`` and some of ``OPTIONAL``."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise LayoutError(f"{SUMS} is not plain ASCII") from None
    digests: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        match = _SUM_LINE.fullmatch(line)
        if not match:
            raise LayoutError(f"{SUMS} line {number} is not '<sha256>  <file>'")
        digest, name = match.groups()
        if name in digests:
            raise LayoutError(f"{SUMS} lists {name} twice")
        if name not in SUMMED and name not in OPTIONAL:
            raise LayoutError(f"{SUMS} lists {name!r}, which a bundle does not hold")
        digests[name] = digest
    missing = [name for name in SUMMED if name not in digests]
    if missing:
        raise LayoutError(f"{SUMS} does not list {', '.join(missing)}")
    return digests


def parse_signers(raw: bytes) -> tuple[str, str]:
    """(principal, "ssh-ed25519 AAAA…") from a bundle's one-line allowed_signers."""
    match = _SIGNERS_LINE.fullmatch(raw.decode("ascii", "replace"))
    if not match:
        raise LayoutError(f'{SIGNERS} is not one line \'<principal> namespaces="{NAMESPACE}" ssh-ed25519 AAAA…\'')
    return match.group(1), match.group(2)


def ledger_text(bundle_name: str, fingerprint: str, witnessed_by: tuple[str, ...] | None) -> str:
    """The part of VERIFY.txt about the device ledger and its witnesses."""
    if witnessed_by is None:
        state = ("This bundle has no ledger proof: the device had no ledger entry for its seal when it was\n"
                 "exported, so nothing in it shows that its records left the machine.")
    elif witnessed_by:
        state = f"When it was exported, the seal's ledger head was cosigned by: {', '.join(witnessed_by)}."
    else:
        state = ("When it was exported, no witness had cosigned the seal's ledger head yet (not yet\n"
                 "witnessed): export it again later, or with --wait-witness.")
    return f"""\
The device ledger and its witnesses
-----------------------------------
ledger.proof (a C2SP tlog-proof) shows that the seal, the last line of
session.jsonl, is in this device's ledger: an append-only Merkle log whose
tree heads are signed by the device and cosigned, with the time they saw
them, by witnesses off the machine. ledger.checkpoints does the same for
every checkpoint of the session. {state}

    chaperone verify {shlex.quote(bundle_name)} --fingerprint {fingerprint} --witness <witness verifier key>

checks, for each witness you name (get its verifier key from its operator,
never from this bundle), that it cosigned every checkpoint and the seal
within 5 minutes of the time each was written. Then no one, not even someone
holding the device key, rewrote, cut short or thinned out the records up to
the last such checkpoint: rebuilt lines could only be cosigned later.

What this does not prove: a technician with root can lie in real time about
what happens after their last witnessed checkpoint (checkpoints come every
few seconds while the session runs); someone controlling the customer's
screen (GUI remote control) can click the customer's buttons; in personal
mode the device key is readable by the customer's account, so anything not
yet witnessed can be forged by that account. Without --witness, verify only
reports which witnesses the bundle claims, unchecked.
"""


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=76)


def mode_sentence(mode: str | None, account: str | None) -> str:
    """What the agent's mode (from the journal's first record) means for the trust one can place in it."""
    if mode == "personal":
        return (f"Personal mode: the agent ran as the account {account or '(not named)'}, which could read the "
                "device key; whoever used that account (the technician too, if they logged in as it) could have "
                "forged any record that no witness had cosigned yet.")
    if mode == "system":
        return (f"System mode: the agent ran as a system service; only {account or 'root'} could read the "
                "device key.")
    return "The journal does not say whether its agent ran as a system service or in personal mode."


def verify_text(session_id: str, principal: str, fingerprint: str, bundle_name: str,
                witnessed_by: tuple[str, ...] | None = None, mode: str | None = None,
                key_account: str | None = None) -> str:
    """VERIFY.txt: how to check this bundle, with and without Chaperone, and what the ledger proves."""
    ssh_verify = (f"ssh-keygen -Y verify -f allowed_signers -I {principal} -n {NAMESPACE} "
                  f"-s SHA256SUMS.sig < SHA256SUMS")
    return f"""\
How to check this Chaperone session log
=======================================

Session:         {session_id}
Signed by:       {principal}
Key fingerprint: {fingerprint}

{_wrap(mode_sentence(mode, key_account))}

First make sure the fingerprint above is the device's: on that computer,
'chaperone init' prints it. Anyone who can make a key can make a bundle;
only the fingerprint tells you it came from that device.

1. With Chaperone (checks the files, the signatures, the hash chain of
   every record, the checkpoints and the seal):

    chaperone verify {shlex.quote(bundle_name)} --fingerprint {fingerprint}

2. With OpenSSH 8.1 or later and sha256sum alone, in the unzipped folder:

    {ssh_verify} && sha256sum -c SHA256SUMS

   ssh-keygen must print: Good "{NAMESPACE}" signature for {principal} with ED25519 key {fingerprint}
   and sha256sum must print OK for every file. This proves that no file was
   changed after the device signed them.

   On Windows (OpenSSH 8.1 or later; Windows 11 has it), run the first step
   through cmd, because PowerShell pipes change line endings:

    cmd /c "{ssh_verify}"

   then compare each file's hash with SHA256SUMS:

    certutil -hashfile session.jsonl SHA256

Files
-----
session.jsonl    the journal: one signed, hash-chained JSON record per line
report.html      the same session as a readable report
SHA256SUMS       the SHA-256 of every other file
SHA256SUMS.sig   the device's SSH signature over SHA256SUMS
allowed_signers  the device's public key, for ssh-keygen
VERIFY.txt       this file
ledger.proof     the seal's place in the device's witnessed ledger (when present)
ledger.checkpoints  the same for every checkpoint (when present)

""" + ledger_text(bundle_name, fingerprint, witnessed_by)
