"""The bundle attached to a ticket: the journal, SHA256SUMS, its signature,
allowed_signers, report.html and VERIFY.txt, in a zip or a folder.

See docs/ARCHITECTURE.md ("Bundles") for the contract.
"""

from agent.bundle.export import export_bundle
from agent.bundle.layout import FILES
from agent.bundle.report import BundleCopy, ReportCheck, render_report, write_report
from agent.bundle.verify import Verdict, verify_bundle

__all__ = ["FILES", "BundleCopy", "ReportCheck", "Verdict", "export_bundle", "render_report", "verify_bundle",
           "write_report"]
