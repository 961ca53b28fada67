"""The review page in a real browser: it renders, sorts, filters, links each session's report, loads nothing."""

from __future__ import annotations

import pytest

from agent.cli import main
from tests.fixtures.browser import resources
from tests.unit.test_review import make_bundle, make_key

pytestmark = pytest.mark.e2e


def test_the_review_page_filters_sorts_and_links_reports(browser, tmp_path, capsys):
    folder = tmp_path / "bundles"
    folder.mkdir()
    alice, bob = make_key("alice-pc"), make_key("bob-pc")
    for n in range(4):
        make_bundle(folder, alice if n % 2 else bob, n, technician="Ada Lovelace" if n % 2 else "Grace Hopper")
    page = tmp_path / "review.html"
    assert main(["review", str(folder), "--index", str(tmp_path / "i"), "-o", str(page)]) == 0
    browser.get(page.as_uri())
    assert browser.title == "Chaperone review"
    assert resources(browser) == []  # nothing fetched: no script, style, font or image from anywhere
    assert browser.execute_script("return document.querySelectorAll('script[src]').length") == 0
    rows = browser.find_elements("css selector", "#sessions tbody tr")
    assert len(rows) == 4
    box = browser.find_element("id", "filter")
    box.send_keys("grace")
    visible = [r for r in rows if r.is_displayed()]
    assert len(visible) == 2 and all("Grace Hopper" in r.text for r in visible)
    assert browser.find_element("id", "shown").text == "2"
    box.clear()
    box.send_keys("INC-3")
    assert len([r for r in rows if r.is_displayed()]) == 1
    box.clear()
    box.send_keys(" ")  # an input event with no words: everything shows again
    assert all(r.is_displayed() for r in rows)
    ticket_header = browser.find_elements("css selector", "#sessions th")[5]
    ticket_header.click()
    tickets = [r.find_elements("css selector", "td")[5].text for r in
               browser.find_elements("css selector", "#sessions tbody tr")]
    assert tickets == sorted(tickets)
    ticket_header.click()
    tickets = [r.find_elements("css selector", "td")[5].text for r in
               browser.find_elements("css selector", "#sessions tbody tr")]
    assert tickets == sorted(tickets, reverse=True)
    link = browser.find_elements("css selector", "#sessions tbody tr a")[0]
    link.click()
    assert "Genuine: checked when this report was written" in browser.page_source
    assert resources(browser) == []


def test_an_injected_script_cannot_run_in_the_review(browser, tmp_path):
    folder = tmp_path / "bundles"
    folder.mkdir()
    make_bundle(folder, make_key("x"), 1, technician="<script>document.title='pwned'</script>")
    page = tmp_path / "review.html"
    assert main(["review", str(folder), "--index", str(tmp_path / "i"), "-o", str(page)]) == 0
    browser.get(page.as_uri())
    assert browser.title == "Chaperone review"
    assert "<script>document.title" in browser.find_element("id", "sessions").text
