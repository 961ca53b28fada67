"""The report in a real browser (headless Chromium via selenium): it renders, folds, prints short, loads nothing."""

from __future__ import annotations

import pytest

from agent.bundle import ReportCheck, render_report
from tests.fixtures.browser import pdf_pages, resources
from tests.samples import SyntheticJournal, realistic_session

pytestmark = pytest.mark.e2e


@pytest.fixture
def short_report(device_key, tmp_path):
    """The report of a 71-second session with 248 of the machine's own processes (the issue's 33 pages)."""
    journal = SyntheticJournal("s-20261122-7KQ3XZ", device_key)
    realistic_session(journal)
    page = tmp_path / "report.html"
    hostile = '"><script>document.title="pwned"</script><img src="http://127.0.0.1:9/x">'
    lines = journal.bytes().replace(b"Printer driver reinstall", hostile.replace('"', '\\"').encode()).splitlines(
        keepends=True)
    page.write_text(render_report(lines, check=ReportCheck(True, "Genuine: session s, 303 records.",
                                                           device_key.fingerprint, True)))
    return page


def test_a_short_session_prints_in_a_few_pages_and_loads_nothing(browser, short_report):
    browser.get(short_report.as_uri())
    assert browser.title.startswith("Chaperone session s-20261122-7KQ3XZ") and "pwned" not in browser.title
    assert resources(browser) == []  # no script, style, image or font from anywhere
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.execute_script("return document.images.length") == 0
    summary = browser.find_element("css selector", "dl.facts").text
    assert "Ada Lovelace" in summary and "INC-20431" in summary and "1 min 11 s" in summary
    pages = pdf_pages(browser)
    print(f"printed pages: {pages}")
    assert 1 <= pages <= 4, f"a 71-second session prints on {pages} pages"


def test_folders_of_other_files_open_on_a_click(browser, short_report):
    browser.get(short_report.as_uri())
    folder = browser.find_elements("css selector", "#files ~ details")[0]
    rows = folder.find_elements("css selector", "tr")
    assert not rows[0].is_displayed()
    folder.find_element("css selector", "summary").click()
    assert folder.get_attribute("open") is not None and rows[0].is_displayed()
    tile = browser.find_element("css selector", "a.tile[href='#back']")
    assert tile.text.startswith("2")
