"""The integration guide's worked example, end to end on the local process stack: a case-management
system written in TypeScript (clients/typescript, run by Node.js) or in Go (clients/go, built with
Debian's Go packages) files a search under its service account, two reviewers confirm the
candidate in the review desk (Chromium through Playwright), the LEAD reaches the program on the
event feed as the integration's NATS user, and it fetches the case's export."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from candor_cli import LocalStack
from tests.conftest import ROOT
from tests.e2e.test_review_desk import analysed, browser, decide, desk, signed_in  # noqa: F401 - browser: fixture
from tests.e2e.test_stack_cli import candor

pytestmark = pytest.mark.e2e

GO_DIST = ROOT / "clients" / "go" / "dist"
#: Each language's example as a command line before its PROBE and CASE arguments.
EXAMPLES = {
    "typescript": ["node", str(ROOT / "clients" / "typescript" / "dist" / "worked-example.js")],
    "go": [str(GO_DIST / "worked-example"), str(GO_DIST / "api.binpb")],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("integration"))
    stack.up()
    candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    yield stack
    stack.down()


class Lines:
    """The program's stdout, a JSON line at a time, read on a thread so a wait can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")  # the program ended

    def next(self, timeout_s: float) -> dict[str, object]:
        """The next line; fails with what the program wrote to stderr when none comes in time."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self._process.kill()
            raise AssertionError(f"no output in {timeout_s} s; stderr: {self._stderr()}") from None
        assert line, f"the example exited ({self._process.wait()}): {self._stderr()}"
        return json.loads(line)  # type: ignore[no-any-return]

    def _stderr(self) -> str:
        assert self._process.stderr is not None
        self._process.wait(10)
        return self._process.stderr.read()


@pytest.mark.parametrize("language", sorted(EXAMPLES))
def test_a_case_system_searches_hears_of_the_lead_and_fetches_the_export(
    browser: Browser,  # noqa: F811 - the review desk's fixture
    stack: LocalStack,
    samples: Path,
    language: str,
) -> None:
    command = EXAMPLES[language]
    assert Path(command[-1]).exists(), f"the {language} example is not built: `make test` builds it"
    case = f"CMS-{language.upper()}-2026-7"
    state = stack.state()
    assert state is not None
    login = stack.nats_login("integration")
    env = {
        **os.environ,
        "CANDOR_GATEWAY": state.gateway,
        # The case-management system's service account, as the identity provider would issue it.
        "CANDOR_TOKEN": stack.token("agency-cms", ("case-system",), ttl_s=1800),
        "CANDOR_NATS_URL": login.url,
        "CANDOR_NATS_USER": login.user,
        "CANDOR_NATS_PASSWORD_FILE": login.password_file,
        "CANDOR_AUTHORISATION": "W-2026-TS-1",
        "CANDOR_WAIT_S": "120",
        "CANDOR_CONSUMER": f"cms-{language}",
    }
    process = subprocess.Popen(
        [*command, str(samples / "obama2.jpg"), case],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(process)
    try:
        searched = lines.next(60)
        assert searched["step"] == "searched" and int(str(searched["candidates"])) >= 1
        search_id = str(searched["search_id"])

        # Two different reviewers confirm the top candidate at the desk (blind, ACE-V).
        for reviewer, notes in (("rita", "same ears and eyebrows"), ("rob", "agree: same person")):
            context, page = signed_in(browser, stack, reviewer, "reviewer")
            page.goto(f"{desk(stack)}/searches/{search_id}")
            analysed(page)
            decide(page, 1, "confirm", notes)
            context.close()

        started = time.monotonic()
        lead = lines.next(60)
        heard_after_s = time.monotonic() - started
        assert lead["step"] == "lead", lead
        assert lead["search_id"] == search_id and lead["case_number"] == case
        assert lead["status"] == "CANDIDATE_STATUS_LEAD" and lead["subject_id"] == "obama"
        assert lead["actor"] == "rob" and int(str(lead["rank"])) == 1
        assert heard_after_s < 30

        exported = lines.next(60)
        assert exported["step"] == "exported" and exported["chain_ok"] is True
        assert exported["exported_by"] == "agency-cms"
        kinds = exported["kinds"]
        assert isinstance(kinds, list)
        assert {"search.completed", "matcher.searched", "review.submitted", "review.confirmed"} <= set(kinds)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
