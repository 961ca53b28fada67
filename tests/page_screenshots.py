"""Retake the report's and the review's screenshots in docs/screenshots/ with headless Chromium.

    .venv/bin/python -m tests.page_screenshots

Each page is made from synthetic sessions signed in-process (``tests.samples``),
rendered in a fixed zone (Europe/Paris) and captured by ``chromium --headless
--screenshot`` on a fresh profile with networking off.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.bundle import BundleCopy, ReportCheck, render_report
from agent.devicekey import DeviceKey
from agent.home import Home
from tests.fixtures.browser import CHROMIUM
from tests.samples import START, SyntheticJournal, realistic_session

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PARIS = ZoneInfo("Europe/Paris")


def shoot(page: Path, png: Path, width: int, height: int, work: Path) -> None:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    f"--user-data-dir={work / 'profile'}", f"--window-size={width},{height}",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)


def crop(png: Path, geometry: str) -> None:
    subprocess.run(["convert", str(png), "-crop", geometry, "+repage", str(png)], check=True)


def report_pages(work: Path) -> None:
    home = Home(work / "home")
    key, _ = DeviceKey.init(home)
    journal = SyntheticJournal("s-20261122-7KQ3XZ", key)
    realistic_session(journal)
    lines = journal.bytes().splitlines(keepends=True)
    checked = work / "report.html"
    checked.write_text(render_report(lines, tz=PARIS, check=ReportCheck(
        True, f"Genuine: session s-20261122-7KQ3XZ, {len(lines)} records, sealed, signed by {key.principal} with "
              f"key {key.fingerprint}.", key.fingerprint, True)))
    shoot(checked, OUT / "report-summary.png", 1000, 1000, work)
    shoot(checked, OUT / "report-changes.png", 1000, 2300, work)
    crop(OUT / "report-changes.png", "1000x1250+0+1000")
    copy = work / "copy.html"
    copy.write_text(render_report(lines, tz=PARIS, copy=BundleCopy("INC-20431.zip", key.fingerprint)))
    shoot(copy, OUT / "report-bundle-copy.png", 1000, 420, work)


def review_page(work: Path) -> None:
    """A review of 24 sessions from three devices, one of them unknown, one bundle changed after signing."""
    from datetime import timedelta

    from cryptography.hazmat.primitives.asymmetric import ed25519

    from agent.review import ReviewIndex, load_devices, review, write_page
    from tests.samples import write_bundle

    keys = [DeviceKey(ed25519.Ed25519PrivateKey.generate(), f"chaperone@{name}")
            for name in ("reception-pc", "accounts-01", "laptop-ceo")]
    folder = work / "bundles"
    folder.mkdir()
    people = ["Ada Lovelace", "Grace Hopper", "Alan Turing"]
    for n in range(24):
        journal = SyntheticJournal(f"s-2026112{n % 9}-{n:04d}", keys[n % 3], START + timedelta(hours=5 * n))
        realistic_session(journal, customer_processes=20 + n, seed=n, technician=people[n % 3],
                          ticket=f"INC-{20431 + n}", length_s=60 + 97 * n)
        data = journal.bytes()
        if n == 7:
            data = data.replace(b"test page printed", b"nothing was changed")
        write_bundle(folder / f"INC-{20431 + n}.zip", keys[n % 3], data)
    devices = work / "devices"
    devices.write_text("".join(f"{k.principal.split('@')[1]} {k.allowed_signers_line().split(' ', 1)[1]}\n"
                               for k in keys[:2]))
    with ReviewIndex(work / "index") as index:
        result = review([str(folder)], devices=load_devices(devices), index=index, reports=work / "review.reports")
    page = work / "review.html"
    with open(page, "w", encoding="utf-8") as out:
        write_page(out, result, reports_href="review.reports", tz=PARIS, sources=["/srv/tickets"])
    shoot(page, OUT / "review.png", 1300, 1100, work)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report_pages(Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        review_page(Path(tmp))
    print(f"screenshots written to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
