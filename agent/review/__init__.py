"""``chaperone review``: verify and index many bundles at once, and report what is wrong across them.

See "Fleet store and the client's review" in ../shared/DESIGN.md for the
``--json`` contract and the problem kinds, and docs/ARCHITECTURE.md ("Review").
"""

from agent.review.index import ReviewIndex, ReviewIndexError
from agent.review.output import load_devices, write_csv, write_json
from agent.review.page import write_page
from agent.review.run import BUNDLE_FIELDS, PROBLEM_KINDS, Review, review
from agent.review.sources import Found, SourceError

__all__ = ["BUNDLE_FIELDS", "PROBLEM_KINDS", "Found", "Review", "ReviewIndex", "ReviewIndexError", "SourceError",
           "load_devices", "review", "write_csv", "write_json", "write_page"]
