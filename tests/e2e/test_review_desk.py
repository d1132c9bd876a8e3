"""The review desk in a real browser: Playwright drives Debian's Chromium through the whole review
of ``make demo``'s search (two reviewers confirm, a dispute goes to a supervisor, an auditor reads
the case and the oversight report), taking screenshots on the way; unauthenticated, wrong-role,
CSRF-less and cross-site requests are refused, and every photo view is in the audit log."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from candor_cli import LocalStack
from candor_client import GatewayClient
from candor_kit.aes_keys import read_aes_key
from candor_review.session import SESSION_COOKIE, Sealer, Session
from tests.conftest import ROOT
from tests.e2e.test_stack_cli import candor, searching, wait_for_audit

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
#: Chromium as the machine's closed network needs it: no sandbox as root, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the screenshots of the review are kept (ignored by git).
SCREENSHOTS = ROOT / ".cache" / "screenshots" / "review-desk"
DEMO_CASE = "DEMO-2026-0001"
DISPUTE_CASE = "DEMO-2026-0002"


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    """The stack after ``make demo``'s enrolments and search (scripts/demo.sh)."""
    stack = LocalStack(tmp_path_factory.mktemp("review-desk"))
    stack.up()
    manifest = stack.data / "bookings.csv"
    rows = [("obama", "obama.jpg"), ("obama", "obama3.jpg"), ("biden", "biden.jpg"), ("group-photo", "t1.jpg")]
    manifest.write_text("subject_id,image_path,source\n" + "".join(f"{s},{samples / f},demo\n" for s, f in rows))
    candor(stack, "gallery", "import", str(manifest), "--quiet")
    # The same six enrolments `candor enroll --face N` makes, through one client.
    state = stack.state()
    assert state is not None
    with GatewayClient(state.gateway, stack.token()) as client:
        for index in range(6):
            client.enroll(samples / "t1.jpg", f"t1-person-{index}", face_index=index, metadata={"source": "demo"})
    yield stack
    stack.down()


def search(stack: LocalStack, samples: Path, case: str, probe: str = "obama2.jpg") -> str:
    """A search as the demo makes it (the CLI's operator is the searcher); its id."""
    found = candor(stack, *searching(samples / probe, case)).stdout
    search_id = re.search(r"^search ([0-9a-f-]{36}) ", found, re.MULTILINE)
    assert search_id, found
    return search_id.group(1)


@pytest.fixture(scope="module")
def demo_search(demo_stack: LocalStack, samples: Path) -> str:
    return search(demo_stack, samples, DEMO_CASE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def desk(stack: LocalStack) -> str:
    state = stack.state()
    assert state is not None
    return f"http://{state.addresses['review']}"


def token(stack: LocalStack, user: str, *roles: str) -> str:
    return stack.token(user, roles, ttl_s=1800)


def signed_in(browser: Browser, stack: LocalStack, user: str, *roles: str) -> tuple[BrowserContext, Page]:
    """A fresh browser profile signed in as ``user`` through the sign-in form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(desk(stack) + "/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.fill("#token", token(stack, user, *roles))
    page.click("form.login button[type=submit]")
    expect(page.locator("header .who span")).to_contain_text(user)
    return context, page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def analysed(page: Page) -> None:
    """Record the probe's analysis (sufficient) when the page asks for it before the candidates."""
    # The search page first: counted on the page being left, the form is not there yet.
    expect(page.locator("section.probe-quality")).to_be_visible()
    analysis = page.locator("form.analysis")
    if analysis.count():
        analysis.locator("input[value=sufficient]").check()
        analysis.locator("button[type=submit]").click()
        expect(page.locator("form.analysis")).to_have_count(0)


def decide(page: Page, rank: int, decision: str, notes: str, features: tuple[str, ...] = ("ears",)) -> None:
    form = page.locator(f"#candidate-{rank} form.decision")
    form.locator(f"input[name=decision][value={decision}]").check()
    for feature in features:
        form.locator(f"input[name=features][value='{feature}']").check()
    form.locator("textarea").fill(notes)
    form.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_contain_text(f"candidate {rank} is recorded")


def test_two_reviewers_confirm_the_demo_search_a_supervisor_settles_a_dispute_and_an_auditor_reads_it_all(
    browser: Browser, demo_stack: LocalStack, demo_search: str, samples: Path
) -> None:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)

    # Rita, a reviewer, finds the demo's search in her queue and compares the faces.
    rita, page = signed_in(browser, demo_stack, "rita", "reviewer")
    expect(page.locator("table.queue")).to_contain_text(DEMO_CASE)
    shot(page, "01-rita-queue")
    page.click(f"a[href='/searches/{demo_search}']")
    # ACE-V: the probe alone first; no candidate is on the page before her analysis.
    expect(page.locator("form.analysis")).to_have_count(1)
    expect(page.locator("nav.strip")).to_have_count(0)
    # Point 2: the probe's quality figures beside it (the demo's probe is good: no warning).
    quality = page.locator("section.probe-quality")
    for figure in ("Face width", "Sharpness", "Between the eyes", "Head tilt", "Head turn"):
        expect(quality).to_contain_text(figure)
    expect(quality.locator("p.warning")).to_have_count(0)
    shot(page, "02a-rita-analysis")
    analysed(page)
    top = page.locator("#candidate-1")
    expect(top.locator("h2")).to_contain_text("obama")
    expect(top.locator("svg.photo")).to_have_count(2)  # probe and candidate, side by side
    expect(top.locator("svg.photo rect.face")).to_have_count(2)  # each face boxed
    # Point 2: where the candidate was enrolled from and when; what the distance means.
    expect(top.locator("dl.enrolment")).to_contain_text("Enrolled from")
    expect(top.locator("dl.enrolment")).to_contain_text("source")  # the import's metadata column, kept sealed
    expect(top.locator("dl.enrolment")).to_contain_text("UTC")
    expect(page.locator("p.score-note").first).to_contain_text("lower is closer")
    expect(page.locator("p.score-note").first).to_contain_text("UNCALIBRATED")
    expect(top.locator("p.calibrated-fmr")).to_contain_text("No calibration measured what this distance means")
    zoomed = top.locator("svg.photo").first.get_attribute("viewBox")  # it opens on the faces
    shot(page, "02-rita-side-by-side")
    page.click(".tools a:text('Whole photo')")
    whole = page.locator("#candidate-1 svg.photo").first.get_attribute("viewBox")
    assert whole and whole.startswith("0 0 ") and zoomed != whole
    page.click(".tools a:text('Face')")
    shot(page, "03-rita-zoomed")
    # With the desk's script: the wheel zooms both photos in step, a double click goes back.
    photos = page.locator("#candidate-1 svg.photo")
    before = [photos.nth(i).get_attribute("viewBox") for i in (0, 1)]
    photos.first.hover()
    page.mouse.wheel(0, -300)
    after = [photos.nth(i).get_attribute("viewBox") for i in (0, 1)]
    widths = [float((box or "").split()[2]) for box in before + after]
    assert widths[2] < widths[0] and widths[3] < widths[1]  # both zoomed in
    assert widths[2] / widths[0] == pytest.approx(widths[3] / widths[1], rel=1e-3)  # by the same factor
    photos.first.dblclick()
    back = [photos.nth(i).get_attribute("viewBox") for i in (0, 1)]
    flat = [[float(v) for v in (box or "").split()] for box in (*back, *before)]
    assert flat[0] + flat[1] == pytest.approx(flat[2] + flat[3], abs=0.06)
    # Aligned on the eyes: both drawn on one canvas, each turned and scaled by its own eyes.
    page.click(".tools a:text('Aligned on the eyes')")
    aligned = page.locator("#candidate-1 svg.photo g[transform^='matrix(']")
    expect(aligned).to_have_count(2)
    shot(page, "03a-rita-aligned")
    # Overlaid: the candidate over the probe at the opacity chosen (the slider, with the script).
    page.click(".tools a:text('Overlay')")
    top_layer = page.locator("#overlay-1 g.top")
    expect(top_layer).to_have_attribute("opacity", "0.5")
    page.locator("input[data-opacity-for='overlay-1']").fill("30")
    expect(top_layer).to_have_attribute("opacity", "0.3")
    shot(page, "03b-rita-overlaid")
    page.click(".tools a:text('Flicker')")
    expect(page.locator("svg.overlay.flicker")).to_have_count(1)
    page.click(".tools a:text('Side by side')")
    decide(page, 1, "confirm", "same ears, scar over the left eyebrow")
    # Blind review: she sees her own decision and no status.
    trail = page.locator("#candidate-1 table.trail")
    expect(trail).to_contain_text("rita")
    expect(page.locator("#candidate-1 .status")).to_have_count(0)
    expect(page.locator("#candidate-1 form.decision")).to_have_count(0)
    shot(page, "04-rita-decided")
    rita.close()

    rob, page = signed_in(browser, demo_stack, "rob", "reviewer")
    page.goto(f"{desk(demo_stack)}/searches/{demo_search}")
    analysed(page)
    expect(page.locator("#candidate-1 table.trail")).to_have_count(0)  # rita's review is hidden from him
    decide(page, 1, "confirm", "agree: same person")
    shot(page, "05-rob-decided")

    # A second search of the demo's probe, on which the reviewers split.
    disputed = search(demo_stack, samples, DISPUTE_CASE)
    page.goto(f"{desk(demo_stack)}/searches/{disputed}")
    analysed(page)
    decide(page, 1, "reject", "the jawline differs", ("chin/jawline",))
    rob.close()
    rita, page = signed_in(browser, demo_stack, "rita", "reviewer")
    page.goto(f"{desk(demo_stack)}/searches/{disputed}")
    analysed(page)
    decide(page, 1, "confirm", "same person")
    rita.close()

    # Sue, a supervisor, finds the dispute in her queue, reads both reviews and settles it.
    sue, page = signed_in(browser, demo_stack, "sue", "supervisor")
    expect(page.locator("table.queue")).to_contain_text(DISPUTE_CASE)
    page.click(f"a[href='/searches/{disputed}']")
    expect(page.locator("#candidate-1 .status")).to_have_text("disputed")
    expect(page.locator("#candidate-1 table.trail")).to_contain_text("the jawline differs")
    shot(page, "06-sue-dispute")
    decide(page, 1, "confirm", "the scar settles it; lead confirmed")
    expect(page.locator("#candidate-1 .status")).to_have_text("lead")
    page.goto(f"{desk(demo_stack)}/case?number={DEMO_CASE}")
    expect(page.locator("table.trail")).to_contain_text("lead")
    expect(page.locator("table.trail")).to_contain_text("scar over the left eyebrow")
    shot(page, "07-sue-case")
    sue.close()

    # Audrey, an auditor, reads the case, opens the photos (audited) and the oversight report.
    audrey, page = signed_in(browser, demo_stack, "audrey", "auditor")
    page.goto(f"{desk(demo_stack)}/case?number={DISPUTE_CASE}")
    trail = page.locator("table.trail")
    for seen in ("rita", "rob", "sue", "supervisor", "lead"):
        expect(trail).to_contain_text(seen)
    page.click(f"a[href='/searches/{disputed}']")
    expect(page.locator("#candidate-1 svg.photo")).to_have_count(2)
    expect(page.locator("#candidate-1 form.decision")).to_have_count(0)
    page.goto(f"{desk(demo_stack)}/report")
    # Each candidate once, by its latest outcome: the settled dispute is a lead, not also a dispute.
    reviews = page.locator("table.counts", has_text="Review outcomes")
    expect(reviews.locator("tr", has_text="confirmed")).to_contain_text("2")
    expect(reviews.locator("tr", has_text="disputed")).to_contain_text("0")
    expect(page.locator("p.note")).to_contain_text("1 of them were disputes a supervisor settled")
    # Policy refusals apart from interface errors; the report as CSV and as PDF.
    expect(page.locator("table.counts caption", has_text="Policy refusals by rule")).to_have_count(1)
    expect(page.locator("table.counts caption", has_text="Interface errors")).to_have_count(1)
    with page.expect_download() as csv_download:
        page.click("p.downloads a:text('CSV')")
    assert "review outcomes,confirmed,2," in Path(csv_download.value.path()).read_text()
    pdf = page.request.get(desk(demo_stack) + (page.locator("p.downloads a:text('PDF')").get_attribute("href") or ""))
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"
    # The model and threshold the period's searches ran under (the demo stack's: uncalibrated).
    models = page.locator("table.trail", has_text="Searches")
    expect(models.locator("tr", has_text="sface 1")).to_contain_text("UNCALIBRATED")
    shot(page, "08-audrey-report")
    audrey.close()

    # Every photo view is in the chain, under the viewer's name, with the photo's hash.
    viewed = wait_for_audit(
        demo_stack,
        "SELECT actor, details_json FROM audit_record WHERE kind = 'photo.viewed' AND case_number = ?",
        (DEMO_CASE,),
    )
    seen = {(actor, json.loads(details)["photo"]) for actor, details in viewed}
    assert {("rita", "probe"), ("rita", "candidate"), ("rob", "probe"), ("rob", "candidate")} <= seen
    assert all(json.loads(details)["sha256"] for _, details in viewed)
    assert sorted(path.name for path in SCREENSHOTS.glob("*.png")) == [
        "01-rita-queue.png",
        "02-rita-side-by-side.png",
        "02a-rita-analysis.png",
        "03-rita-zoomed.png",
        "03a-rita-aligned.png",
        "03b-rita-overlaid.png",
        "04-rita-decided.png",
        "05-rob-decided.png",
        "06-sue-dispute.png",
        "07-sue-case.png",
        "08-audrey-report.png",
    ]


class AttackerPage(BaseHTTPRequestHandler):
    """Another site, which posts a decision to the desk from the visitor's browser."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}">'
            '<input name="decision" value="reject"><input name="notes" value="forged"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_unauthenticated_wrong_role_csrf_less_and_cross_site_requests_are_refused(
    browser: Browser, demo_stack: LocalStack, samples: Path
) -> None:
    base = desk(demo_stack)
    search_id = search(demo_stack, samples, "DEMO-2026-0003")
    decision_url = f"{base}/searches/{search_id}/candidates/1"

    # Unauthenticated: pages send the browser to sign in; a posted decision is refused.
    anonymous = browser.new_context()
    page = anonymous.new_page()
    page.goto(f"{base}/searches/{search_id}")
    expect(page).to_have_url(re.compile(r"/login$"))
    assert anonymous.request.post(decision_url, form={"decision": "confirm"}).status == 401
    # The sign-in form needs its own CSRF token, and a token the gateway would accept.
    assert anonymous.request.post(f"{base}/login", form={"token": "x"}).status == 403
    page.fill("#token", "not-a-jwt")
    page.click("form.login button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("sign-in refused")
    # An investigator is not let in at all.
    page.fill("#token", token(demo_stack, "ivan", "investigator"))
    page.click("form.login button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("for reviewers, supervisors and auditors")
    anonymous.close()

    # Wrong role: an auditor may read but not decide, and a reviewer may not read the report.
    audrey, page = signed_in(browser, demo_stack, "audrey-2", "auditor")
    csrf = page.locator("form.who input[name=csrf]").get_attribute("value")
    assert csrf
    refused = page.request.post(decision_url, form={"decision": "confirm", "notes": "x", "csrf": csrf})
    assert refused.status == 403 and "reviewers or supervisors" in refused.text()
    audrey.close()
    rita, page = signed_in(browser, demo_stack, "rita-2", "reviewer")
    assert page.goto(f"{base}/report").status == 403
    assert page.goto(f"{base}/case?number=DEMO-2026-0003").status == 403

    # The session cookie is __Host-, Secure, HttpOnly and SameSite=Strict; pages carry the CSP.
    [cookie] = [c for c in rita.cookies() if c["name"] == "__Host-candor-session"]
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    response = page.goto(f"{base}/searches/{search_id}")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy

    # CSRF-less: the page's own form with its token taken out is refused.
    analysed(page)
    form = page.locator("#candidate-1 form.decision")
    form.locator("input[name=csrf]").evaluate("input => input.remove()")
    form.locator("input[value=confirm]").check()
    form.locator("button[type=submit]").click()
    expect(page.locator("p.error")).to_contain_text("CSRF token is missing or wrong")
    # A wrong token is refused too.
    assert page.request.post(decision_url, form={"decision": "confirm", "csrf": "guess"}).status == 403

    # Cross-site: another site's page posting from Rita's browser carries no session cookie.
    AttackerPage.target = decision_url
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), AttackerPage)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{attacker.server_address[1]}/")
        page.wait_for_url(decision_url)
        expect(page.locator("p.error")).to_contain_text("sign in first")
    finally:
        attacker.shutdown()

    # None of it reached the review: Rita may still decide, and the chain holds no review of hers.
    page.goto(f"{base}/searches/{search_id}")
    expect(page.locator("#candidate-1 form.decision")).to_have_count(1)
    rita.close()
    rows = wait_for_audit(
        demo_stack, "SELECT count(*) FROM audit_record WHERE kind = 'review.submitted' AND actor = ?", ("rita-2",)
    )
    assert rows == [(0,)]


def test_error_pages_sign_in_and_out_say_what_happened(browser: Browser, demo_stack: LocalStack) -> None:
    """Point 8: the desk's own 404 page, "not found" for a missing search, a sign-out that says so,
    "Bearer " before a pasted token, and a token inside the clock leeway refused with the reason."""
    base = desk(demo_stack)
    rita, page = signed_in(browser, demo_stack, "rita-8", "reviewer")
    response = page.goto(f"{base}/no/such/page")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("header .who")).to_contain_text("rita-8")  # the desk's own page, signed in
    response = page.goto(f"{base}/searches/00000000-0000-4000-8000-000000000000")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    expect(page.locator("p.error")).to_contain_text("no search")
    page.click("header form.who button[type=submit]")
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))
    expect(page.locator("p.done")).to_have_text("You are signed out.")
    rita.close()

    anonymous = browser.new_context()
    page = anonymous.new_page()
    page.goto(f"{base}/login")
    page.fill("#token", "Bearer " + token(demo_stack, "rita-8", "reviewer"))
    page.click("form.login button[type=submit]")
    expect(page.locator("header .who span")).to_contain_text("rita-8")
    page.click("header form.who button[type=submit]")
    # Expired ten seconds ago: inside the gateway's 30 s leeway, too little for a session.
    page.fill("#token", demo_stack.token("rita-8", ("reviewer",), ttl_s=-10))
    page.click("form.login button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("your token expired at")
    expect(page.locator("p.error")).to_contain_text("ask your identity provider for a new token")
    anonymous.close()


#: The sizes every page is checked at: a laptop, a tablet held upright, a phone.
SIZES = {"desktop": (1366, 900), "tablet": (768, 1024), "phone": (390, 844)}
AXE = ROOT / "tests" / "e2e" / "axe" / "node_modules" / "axe-core" / "axe.min.js"


def accessibility_problems(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it stands."""
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed at {AXE}: make test installs it (npm ci in tests/e2e/axe)")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def overflowing(page: Page) -> list[str]:
    """What sticks out sideways past the window: the page itself, or any table."""
    return page.evaluate(
        """() => {
        const root = document.documentElement, width = root.clientWidth, out = [];
        if (root.scrollWidth > width + 1) out.push(`page ${root.scrollWidth}px`);
        document.querySelectorAll('table').forEach((t, i) => {
          const box = t.getBoundingClientRect();
          if (box.right > width + 1 || box.left < -1) out.push(`table ${i} ${t.className} ends at ${box.right}px`);
        });
        return out;
    }"""
    )


@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_at_desktop_tablet_and_phone_size_is_accessible_and_nothing_overflows(
    browser: Browser, demo_stack: LocalStack, samples: Path, size: str
) -> None:
    """Points 7 and 9: each page state at the three sizes, screenshot kept; axe-core finds nothing
    serious or critical; no table or page runs past the window; photos stay legible on a phone."""
    width, height = SIZES[size]
    base = desk(demo_stack)
    search_id = search(demo_stack, samples, f"SIZE-{size.upper()}")
    folder = SCREENSHOTS.parent / "sizes"
    folder.mkdir(parents=True, exist_ok=True)
    problems: dict[str, list[str]] = {}

    def check(page: Page, name: str) -> None:
        page.wait_for_load_state()
        page.screenshot(path=str(folder / f"{size}-{name}.png"), full_page=True)
        found = accessibility_problems(page) + overflowing(page)
        if found:
            problems[name] = found

    anonymous = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
    page = anonymous.new_page()
    page.goto(f"{base}/login")
    check(page, "sign-in")
    anonymous.close()
    for user, roles, pages in (
        (f"rita-{size}", ("reviewer",), ["/", f"/searches/{search_id}", f"/searches/{search_id}?view=aligned",
                                         f"/searches/{search_id}?view=overlay", "/no/such/page"]),
        (f"audrey-{size}", ("auditor",), [f"/case?number=SIZE-{size.upper()}", "/report"]),
    ):  # fmt: skip
        context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
        page = context.new_page()
        page.goto(f"{base}/login")
        page.fill("#token", token(demo_stack, user, *roles))
        page.click("form.login button[type=submit]")
        for path in pages:
            page.goto(base + path)
            if page.locator("form.analysis").count():
                check(page, "analysis")
                analysed(page)
            check(page, re.sub(r"[^a-z0-9]+", "-", path.replace(search_id, "search").lower()).strip("-") or "queue")
            if path == f"/searches/{search_id}":
                # Legible on a phone: each photo at least 300 px wide, the two one above the other.
                boxes = [p.bounding_box() for p in page.locator("#candidate-1 svg.photo").all()]
                assert all(b and b["width"] >= min(300, width * 0.4) for b in boxes), boxes
        context.close()
    assert not problems, problems


def test_the_page_checks_catch_what_they_look_for(browser: Browser, demo_stack: LocalStack) -> None:
    """The checks above can fail: an image without a text alternative is a critical axe finding,
    and a table wider than a phone is caught."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{desk(demo_stack)}/login")
    page.evaluate(
        """() => {
        document.querySelector('main').insertAdjacentHTML('beforeend',
          '<img src="/static/none.png"><table><tr><td>' + 'x'.repeat(400) + '</td></tr></table>');
        document.querySelector('main table td').style.whiteSpace = 'nowrap';
    }"""
    )
    assert any(problem.startswith("image-alt (critical)") for problem in accessibility_problems(page))
    assert any(problem.startswith("table 0") for problem in overflowing(page))
    context.close()


def expire_session(context: BrowserContext, stack: LocalStack) -> None:
    """End the browser's desk session as time would: the same sealed session, its expiry passed
    (sealed with the desk's own key, which the local stack keeps in its secrets folder)."""
    sealer = Sealer(read_aes_key(stack.data / "secrets" / "review-session-key", "the desk's session key"))
    [cookie] = [c for c in context.cookies() if c["name"] == SESSION_COOKIE]
    session = sealer.open_session(cookie["value"])
    assert session is not None
    ended = Session(session.user, session.roles, session.token, session.csrf, int(time.time()) - 5)
    context.add_cookies([{**cookie, "value": sealer.seal_session(ended)}])  # type: ignore[list-item]


def test_a_reviewers_work_is_never_lost(browser: Browser, demo_stack: LocalStack, samples: Path) -> None:
    """Point 5: a reject without notes, and a decision the gateway refuses, are answered on the same
    page with the choice and notes kept; a decision posted after the session ended is kept and
    waiting after sign-in; after a decision the reviewer stays at that candidate with the view
    kept, and "Next search" leads on."""
    base = desk(demo_stack)
    first, second = search(demo_stack, samples, "KEEP-0001"), search(demo_stack, samples, "KEEP-0002")
    context, page = signed_in(browser, demo_stack, "kim", "reviewer")
    form = page.locator("#candidate-1 form.decision")

    # A reject without notes: the same page, the choice kept, nothing recorded.
    page.goto(f"{base}/searches/{first}?view=aligned&zoom=2")
    analysed(page)
    form.locator("input[value=reject]").check()
    form.locator("input[name=features][value=nose]").check()
    form.locator("button[type=submit]").click()
    expect(form.locator("p.error")).to_contain_text("a different people conclusion (and a supervisor's decision) needs")
    expect(form.locator("input[value=reject]")).to_be_checked()
    expect(form.locator("input[name=features][value=nose]")).to_be_checked()
    # Notes the gateway refuses (a control character): answered in place, the notes kept as typed.
    form.locator("textarea").fill("ears differ\x07")
    form.locator("button[type=submit]").click()
    expect(form.locator("p.error")).to_contain_text("no other control or formatting characters")
    expect(form.locator("textarea")).to_have_value("ears differ\x07")

    # The session ends while she writes: her decision is kept, and waits for her after sign-in.
    form.locator("input[value=confirm]").check()
    form.locator("input[name=features][value=scars]").check()
    form.locator("textarea").fill("same scar over the left eyebrow")
    expire_session(context, demo_stack)
    form.locator("button[type=submit]").click()
    expect(page.locator("p.done")).to_contain_text("Your session ended before your decision on candidate 1")
    page.fill("#token", token(demo_stack, "kim", "reviewer"))
    page.click("form.login button[type=submit]")
    expect(page).to_have_url(re.compile(rf"/searches/{first}\?rank=1&view=aligned&zoom=2#compare$"))
    expect(form.locator("textarea")).to_have_value("same scar over the left eyebrow")
    expect(form.locator("input[value=confirm]")).to_be_checked()
    expect(form.locator("input[name=features][value=scars]")).to_be_checked()
    expect(form.locator("p.done")).to_contain_text("check it and record it")
    form.locator("button[type=submit]").click()

    # Recorded: she stays at the candidate with her view, and the next search is one click away.
    expect(page.locator("p.done")).to_contain_text("Your decision on candidate 1 is recorded")
    assert "view=aligned" in page.url and "zoom=2" in page.url and page.url.endswith("#compare")
    expect(page.locator("#candidate-1 svg.photo g[transform^='matrix(']")).to_have_count(2)
    page.click("a.next-search")
    expect(page).to_have_url(re.compile(r"/searches/[0-9a-f-]{36}\?view=aligned&zoom=2$"))
    assert first not in page.url
    # The draft was given back once: signing in again does not bring it back.
    context.close()
    rows = wait_for_audit(
        demo_stack, "SELECT details_json FROM audit_record WHERE kind = 'review.submitted' AND actor = ?", ("kim",)
    )
    assert [json.loads(details)["search_id"] for (details,) in rows] == [first]
    assert second  # waits in her queue still


def test_a_candidate_enrolled_from_a_group_photo_opens_on_its_face(
    browser: Browser, demo_stack: LocalStack, samples: Path
) -> None:
    """Point 1: the demo enrolled six faces of one group photo; a candidate among them opens on its
    own face, not on the group."""
    found = candor(demo_stack, *searching(samples / "t1.jpg", "GROUP-0001"), "--face", "2").stdout
    search_id = re.search(r"^search ([0-9a-f-]{36}) ", found, re.MULTILINE)
    assert search_id, found
    context, page = signed_in(browser, demo_stack, "gail", "reviewer")
    page.goto(f"{desk(demo_stack)}/searches/{search_id.group(1)}")
    analysed(page)
    expect(page.locator("#candidate-1 h2")).to_contain_text("t1-person-")
    candidate = page.locator("#candidate-1 svg.photo").nth(1)
    view = [float(v) for v in (candidate.get_attribute("viewBox") or "").split()]
    image = candidate.locator("image")
    photo_width = float(image.get_attribute("width") or 0)
    assert view[2] < photo_width / 4, (view, photo_width)  # a face of the group, not the group
    shot(page, "09-gail-group-photo-candidate")
    context.close()


def test_a_search_whose_probe_analysis_waits_never_says_nothing_waits(
    browser: Browser, demo_stack: LocalStack, samples: Path
) -> None:
    """A search whose candidates wait for the reviewer's analysis of the probe shows the analysis
    step, and must not also say "Nothing here waits for you. Next search": a reviewer who believed
    it would leave the search waiting on them. Once they have decided all theirs, it says so."""
    first = search(demo_stack, samples, "WAITS-0001")
    search(demo_stack, samples, "WAITS-0002")  # so that there is a next search to offer
    context, page = signed_in(browser, demo_stack, "wanda", "reviewer")
    page.goto(f"{desk(demo_stack)}/searches/{first}")
    expect(page.locator("form.analysis")).to_be_visible()
    expect(page.locator("p.done")).to_have_count(0)
    shot(page, "11-wanda-analysis-waits")
    analysed(page)
    decide(page, 1, "confirm", "", ("ears",))
    expect(page.locator("p.done")).to_contain_text("is recorded")
    page.goto(f"{desk(demo_stack)}/searches/{first}")
    expect(page.locator("p.done")).to_contain_text("Nothing here waits for you")
    context.close()


def test_supervisors_seed_known_answer_tests_that_reviewers_cannot_tell_and_the_report_scores_them(
    browser: Browser, demo_stack: LocalStack, samples: Path, tmp_path: Path
) -> None:
    """Point 4: `candor proficiency seed` puts labelled pairs in reviewers' queues; reviewed on the
    desk like any search; never a lead; the auditor's report shows each reviewer's accuracy."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "probe,candidate,same,case,subject\n"
        f"{samples / 'obama2.jpg'},{samples / 'obama3.jpg'},yes,2026-0917,B-44120\n"
        f"{samples / 'obama2.jpg'},{samples / 'biden.jpg'},no,2026-0918,B-44121\n"
    )
    sue = token(demo_stack, "sue-pt", "supervisor")
    seeded = candor(
        demo_stack, "--token", sue, "proficiency", "seed", str(pairs), "--purpose", "investigation",
        "--searcher", "ivan",
    ).stdout  # fmt: skip
    assert "2 of 2 test(s) seeded" in seeded, seeded
    for reviewer in ("pat", "quinn"):
        context, page = signed_in(browser, demo_stack, reviewer, "reviewer")
        page.goto(f"{desk(demo_stack)}/?case=2026-09")
        expect(page.locator("p.count")).to_contain_text("2 searches match these filters")
        rows = page.locator("table.queue tbody tr")
        expect(rows.first).to_contain_text("ivan")  # the searcher it is shown under
        for case, decision, notes, feature in (
            ("2026-0917", "confirm", "", "ears"),
            ("2026-0918", "reject", "nose", "nose"),
        ):
            page.goto(f"{desk(demo_stack)}/?case={case}")
            page.click("table.queue tbody tr a")
            analysed(page)
            expect(page.locator("#candidate-1 h2")).to_contain_text("B-4412")
            decide(
                page, 1, decision if reviewer == "pat" or case == "2026-0917" else "confirm", notes or "x", (feature,)
            )
        context.close()
    audrey, page = signed_in(browser, demo_stack, "audrey-pt", "auditor")
    page.goto(f"{desk(demo_stack)}/report")
    scores = page.locator("table.trail", has_text="Accuracy")
    expect(scores.locator("tr", has_text="pat")).to_contain_text("100.0%")
    expect(scores.locator("tr", has_text="quinn")).to_contain_text("50.0%")
    shot(page, "10-audrey-proficiency")
    audrey.close()
    leads = wait_for_audit(
        demo_stack, "SELECT count(*) FROM audit_record WHERE kind = 'proficiency.scored' AND case_number LIKE ?",
        ("2026-09%",),
    )  # fmt: skip
    assert leads[0][0] >= 1
    confirmed = "SELECT count(*) FROM audit_record WHERE kind = 'review.confirmed' AND case_number LIKE ?"
    assert wait_for_audit(demo_stack, confirmed, ("2026-09%",)) == [(0,)]


def test_the_queue_counts_pages_sorts_and_filters_past_a_page(
    browser: Browser, demo_stack: LocalStack, samples: Path
) -> None:
    """Point 6: more searches than a page: the total, pages, the order and the filters."""
    state = demo_stack.state()
    assert state is not None
    made = []
    with GatewayClient(state.gateway, demo_stack.token()) as client:
        for index in range(55):
            made.append(
                client.search(samples / "obama2.jpg", f"PAGE-{index:03d}", "investigation", authorisation="W-PAGE")
            )
    context, page = signed_in(browser, demo_stack, "paula", "reviewer")
    page.goto(f"{desk(demo_stack)}/?case=PAGE-")
    expect(page.locator("p.count")).to_have_text("55 searches match these filters; showing 1 to 50.")
    expect(page.locator("table.queue tbody tr")).to_have_count(50)
    expect(page.locator("table.queue tbody tr").first).to_contain_text("PAGE-000")
    page.click("nav.pages a[rel=next]")
    expect(page.locator("p.count")).to_have_text("55 searches match these filters; showing 51 to 55.")
    expect(page.locator("table.queue tbody tr")).to_have_count(5)
    page.select_option("select[name=order]", "newest")
    page.click("form.filters button[type=submit]")
    expect(page.locator("table.queue tbody tr").first).to_contain_text("PAGE-054")
    page.fill("input[name=case]", "PAGE-01")
    page.click("form.filters button[type=submit]")
    expect(page.locator("p.count")).to_have_text("10 searches match these filters.")
    page.check("input[name=partly]")
    page.click("form.filters button[type=submit]")
    expect(page.locator("p.count")).to_have_text("No search waiting for you matches these filters.")
    shot(page, "11-paula-queue-filtered")
    context.close()


def test_score_blind_review_hides_the_distances_and_the_order_from_a_reviewer(
    browser: Browser, demo_stack: LocalStack, samples: Path
) -> None:
    """Point 3's option: with the policy's score_blind (reread by the running gateway), a reviewer
    sees no distance, and the page says why; a supervisor still sees them."""
    policy = demo_stack.data / "policy.yaml"
    written = policy.read_text()
    assert "score_blind: false" in written
    search_id = search(demo_stack, samples, "BLIND-DESK-1")
    context, page = signed_in(browser, demo_stack, "bianca", "reviewer")
    try:
        policy.write_text(written.replace("score_blind: false", "score_blind: true"))
        deadline = time.monotonic() + 30
        while True:
            page.goto(f"{desk(demo_stack)}/searches/{search_id}")
            analysed(page)
            blind = page.locator("p.score-note", has_text="Score-blind review").count()
            if blind or time.monotonic() > deadline:
                break
            time.sleep(1)
        expect(page.locator("p.score-note").first).to_contain_text("Score-blind review")
        expect(page.locator("p.calibrated-fmr")).to_have_count(0)
        expect(page.locator("#candidate-1 h2 small")).to_have_text("score hidden (score-blind review)")
        expect(page.locator("nav.strip .distance")).to_have_count(0)
        shot(page, "12-bianca-score-blind")
        supervisor, overseer = signed_in(browser, demo_stack, "sam-blind", "supervisor")
        overseer.goto(f"{desk(demo_stack)}/searches/{search_id}")
        expect(overseer.locator("#candidate-1 h2 small")).to_contain_text("distance 0.")
        supervisor.close()
    finally:
        policy.write_text(written)
        context.close()
    # Back to the usual policy before the next test: the page shows distances again.
    context, page = signed_in(browser, demo_stack, "bianca-2", "reviewer")
    deadline = time.monotonic() + 30
    page.goto(f"{desk(demo_stack)}/searches/{search_id}")
    analysed(page)
    while page.locator("p.score-note", has_text="Score-blind review").count() and time.monotonic() < deadline:
        time.sleep(1)
        page.reload()
    expect(page.locator("#candidate-1 h2 small")).to_contain_text("distance 0.")
    context.close()
