"""What a bundle holds, and the small text files in it.

A bundle is a zip (or a folder) with exactly ``FILES``. ``SHA256SUMS`` lists
every other file in ``sha256sum`` format; ``SHA256SUMS.sig`` is an SSHSIG over
it (namespace ``chaperone-session``) by the device key in ``allowed_signers``.
"""

from __future__ import annotations

import re
import shlex

from agent.errors import LayoutError
from agent.journal import NAMESPACE

JOURNAL = "session.jsonl"
SUMS = "SHA256SUMS"
SIG = "SHA256SUMS.sig"
SIGNERS = "allowed_signers"
REPORT = "report.html"
VERIFY = "VERIFY.txt"
FILES = (JOURNAL, SUMS, SIG, SIGNERS, REPORT, VERIFY)
#: The files SHA256SUMS lists, in the order it lists them.
SUMMED = (JOURNAL, REPORT, VERIFY, SIGNERS)

#: Size limits when reading a bundle (a guard against zip bombs).
MAX_SIZE = {JOURNAL: 8 << 30, REPORT: 8 << 30, SUMS: 64 << 10, SIG: 64 << 10, SIGNERS: 64 << 10, VERIFY: 1 << 20}
#: The largest compression ratio accepted for a member above 1 MiB.
MAX_RATIO = 200

_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *]([^\r\n]+)\n")
PRINCIPAL = re.compile(r"[A-Za-z0-9@._+-]{1,200}")
_SIGNERS_LINE = re.compile(
    r'([A-Za-z0-9@._+-]{1,200}) namespaces="' + re.escape(NAMESPACE) + r'" (ssh-ed25519 [A-Za-z0-9+/]+=*)\n'
)


def sums_text(digests: dict[str, str]) -> bytes:
    """``SHA256SUMS`` for the digests of ``SUMMED``."""
    return "".join(f"{digests[name]}  {name}\n" for name in SUMMED).encode("ascii")


def parse_sums(raw: bytes) -> dict[str, str]:
    """Name -> hex digest from a ``SHA256SUMS`` that lists exactly ``SUMMED``."""
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
        if name not in SUMMED:
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


def verify_text(session_id: str, principal: str, fingerprint: str, bundle_name: str) -> str:
    """VERIFY.txt: how to check this bundle, with and without Chaperone."""
    ssh_verify = (f"ssh-keygen -Y verify -f allowed_signers -I {principal} -n {NAMESPACE} "
                  f"-s SHA256SUMS.sig < SHA256SUMS")
    return f"""\
How to check this Chaperone session log
=======================================

Session:         {session_id}
Signed by:       {principal}
Key fingerprint: {fingerprint}

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
"""
