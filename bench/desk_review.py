"""How long a reviewer needs to decide one candidate from the review desk's queue: the clicks (and
fields typed into) a person makes, and the seconds the desk itself takes to serve them.

A local stack is started with ``make demo``'s gallery; an operator files ``--searches`` searches of
the demo's probe; a reviewer signs in through the desk in Debian's Chromium (Playwright) and, for
each search, goes from the queue to a recorded decision on its first candidate as a person would,
through the page's own links and forms. Human think time is not in the seconds: they are what
the desk and the stack add to the person's own time.

    python bench/desk_review.py [--searches 5]

Prints the clicks and typed fields per decision, and the desk's p50 / max seconds per decision.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_cli import LocalStack  # noqa: E402

CANDOR = ROOT / ".venv" / "bin" / "candor"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


class Counted:
    """A page whose clicks and typed fields are counted."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.clicks = 0
        self.typed = 0

    def click(self, selector: str) -> None:
        self.clicks += 1
        self.page.click(selector)

    def check(self, selector: str) -> None:
        self.clicks += 1
        self.page.check(selector)

    def fill(self, selector: str, text: str) -> None:
        self.typed += 1
        self.page.fill(selector, text)


def decide_first_candidate(counted: Counted) -> None:
    """From the queue (or a search the page led on to) to a recorded "same person" conclusion on a
    search's first candidate, through the page's own controls."""
    page = counted.page
    if "/searches/" not in page.url:
        counted.click("table.queue tbody tr a")
    if page.locator("form.analysis").count():  # ACE-V: the probe's analysis, before any candidate
        counted.check("form.analysis input[value=sufficient]")
        counted.click("form.analysis button[type=submit]")
    counted.check("#candidate-1 form.decision input[value=confirm]")
    if page.locator("#candidate-1 form.decision input[name=features]").count():  # the features relied on
        counted.check("#candidate-1 form.decision input[name=features][value=ears]")
    counted.fill("#candidate-1 form.decision textarea", "same ears and eyebrow shape")
    counted.click("#candidate-1 form.decision button[type=submit]")
    expect(page.locator("p.done")).to_contain_text("candidate 1")


def on_to_the_next(counted: Counted) -> None:
    """The way the page offers on to the next search: its "next search" link, else the queue."""
    page = counted.page
    if page.locator("a.next-search").count():
        counted.click("a.next-search")
    else:
        counted.click("header a.brand")
    page.wait_for_load_state()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=5)
    args = parser.parse_args()
    samples = fetch(ROOT / ".cache" / "samples")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as folder:
        stack = LocalStack(Path(folder))
        stack.up()
        try:
            run = [str(CANDOR), "--data", str(stack.data)]
            for subject, photo in (("obama", "obama.jpg"), ("biden", "biden.jpg")):
                subprocess.run(
                    [*run, "enroll", str(samples / photo), "--subject", subject], check=True, capture_output=True
                )
            searches = []
            for index in range(args.searches):
                found = subprocess.run(
                    [*run, "search", str(samples / "obama2.jpg"), "--case", f"BENCH-{index:04d}",
                     "--purpose", "investigation", "--authorisation", "W-BENCH"],
                    check=True, capture_output=True, text=True,
                ).stdout  # fmt: skip
                matched = re.search(r"^search ([0-9a-f-]{36}) ", found, re.MULTILINE)
                assert matched, found
                searches.append(matched.group(1))
            state = stack.state()
            assert state is not None
            base = f"http://{state.addresses['review']}"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
                page.goto(base + "/login")
                page.fill("#token", stack.token("bench-reviewer", ("reviewer",), ttl_s=1800))
                page.click("form.login button[type=submit]")
                seconds, clicks, typed = [], [], []
                for _ in searches:
                    counted = Counted(page)
                    started = time.perf_counter()
                    decide_first_candidate(counted)
                    on_to_the_next(counted)
                    seconds.append(time.perf_counter() - started)
                    clicks.append(counted.clicks)
                    typed.append(counted.typed)
                browser.close()
        finally:
            stack.down()
    print(f"decisions: {len(seconds)}")
    print(f"clicks per decision (queue to the next search): {statistics.median(clicks):g}")
    print(f"fields typed per decision: {statistics.median(typed):g}")
    print(f"desk seconds per decision: p50 {statistics.median(seconds):.2f} / max {max(seconds):.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
