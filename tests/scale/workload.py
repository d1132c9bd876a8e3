"""The scale-out run's workload, run inside the compose network (``make test-scale``): a bulk import
of varied crops of the packaged sample photos, searches from several investigators, and two blind
reviewers, all at once, every call logged with its outcome; then the checks that nothing was lost or
doubled, read from the gateway and from the audit chain in PostgreSQL.

    python -m tests.scale.workload --out /out --seconds 420 --photos 600

The host (scripts/test_scale.py) breaks the deployment while this runs and reads what it writes:
``ops.jsonl`` (one line a call), ``started`` (when the workload began) and ``checks.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
from PIL import Image, ImageOps

from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor_cli.stack import AUDIENCE
from candor_client import GatewayClient
from candor_kit.tokens import issue_token, load_private_key
from tests.scale.faults import Op

#: The people of the packaged photos a search or an import crop can be of (32bit.png and
#: obama_partial_face.jpg are Obama too; t1.jpg, a group of six others, stays unlabelled: its crops
#: are imported, and a search answered with one of them is a wrong answer).
PEOPLE = {
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "32bit.png": "obama",
    "obama_partial_face.jpg": "obama",
    "biden.jpg": "biden",
}
UNLABELLED = ("t1.jpg",)
#: Probes: each is of a person enrolled before the workload starts, so every answer can be judged.
PROBES = (("obama2.jpg", "obama"), ("biden.jpg", "biden"))
#: The policy's daily quota is per user: a new investigator every this many searches.
SEARCHES_PER_INVESTIGATOR = 150
#: gRPC codes a call may end with while a part of the deployment is down; anything else is a defect.
TRANSIENT = {"UNAVAILABLE"}
BATCH = 10
#: How long the checks wait for the audit chain to take in the run's last events.
CHAIN_WAIT_S = 120

T = TypeVar("T")


@dataclass(frozen=True)
class Deployment:
    """What the workload reaches, from the compose runner's environment."""

    gateway: str
    key: Any
    issuer: str
    audit_dsn: str

    @classmethod
    def from_env(cls) -> Deployment:
        """The e2e runner's settings (compose.e2e.yaml)."""
        return cls(
            os.environ["CANDOR_E2E_GATEWAY"],
            load_private_key(Path(os.environ["CANDOR_E2E_TOKEN_KEY_FILE"]).read_bytes()),
            os.environ["CANDOR_E2E_TOKEN_ISSUER"],
            Path(os.environ["CANDOR_E2E_AUDIT_DSN_FILE"]).read_text().strip(),
        )

    def client(self, user: str, roles: tuple[str, ...]) -> GatewayClient:
        """A client with a fresh token for ``user``, with a deadline that outlasts a 30 s fault."""
        token = issue_token(self.key, user, list(roles), 3600, self.issuer, AUDIENCE)
        return GatewayClient(self.gateway, token, timeout_s=60)


@dataclass
class OpLog:
    """Every call of the workload, one JSON line each, safe to append to from several threads."""

    path: Path
    ops: list[Op] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, kind: str, action: Callable[[], T], **fields: Any) -> tuple[str, T | None]:
        """Runs one call, logs it with its gRPC code and times, and returns the code and answer."""
        start = time.time()
        code, answer, detail = "OK", None, ""
        try:
            answer = action()
        except grpc.RpcError as error:
            code, detail = error.code().name, (error.details() or "")[:300]
        op = Op(kind=kind, start=start, end=time.time(), code=code, detail=detail, fields=fields)
        self.add(op)
        return code, answer

    def add(self, op: Op) -> None:
        """Keeps ``op`` and writes its line."""
        with self._lock:
            self.ops.append(op)
            with self.path.open("a") as out:
                out.write(json.dumps(op.as_json()) + "\n")


def variants(samples: Path, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """``count`` import photos: varied crops, sizes, mirrors and JPEG qualities of the sample photos,
    and one in 25 a blank frame (rejected: no face), each with the person it shows ("" unknown)."""
    rng = random.Random(seed)
    sources = [(name, Image.open(samples / name).convert("RGB")) for name in (*PEOPLE, *UNLABELLED)]
    for index in range(count):
        if index % 25 == 24:
            blank = Image.new("RGB", (640, 480), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
            yield "", jpeg(blank, 90)
            continue
        name, photo = sources[index % len(sources)]
        width, height = photo.size
        keep = rng.uniform(0.82, 1.0)
        left, top = rng.uniform(0, 1 - keep) * width, rng.uniform(0, 1 - keep) * height
        crop = photo.crop((int(left), int(top), int(left + keep * width), int(top + keep * height)))
        crop.thumbnail((rng.randrange(520, 900),) * 2)
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        yield PEOPLE.get(name, ""), jpeg(crop, rng.randrange(70, 96))


def jpeg(image: Image.Image, quality: int) -> bytes:
    """``image`` as JPEG bytes."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def retried(log: OpLog, kind: str, action: Callable[[], T], deadline: float, **fields: Any) -> tuple[str, T | None]:
    """A call repeated while it fails UNAVAILABLE (each attempt logged), until it succeeds, fails
    otherwise, or ``deadline`` passes."""
    while True:
        code, answer = log.call(kind, action, **fields)
        if code not in TRANSIENT or time.time() > deadline:
            return code, answer
        time.sleep(1)


class Workload:
    """The import, the searches and the reviews, each on threads of its own, for ``seconds``."""

    def __init__(
        self, deployment: Deployment, samples: Path, out: Path, seconds: float, photos: int, paced: bool = True
    ) -> None:
        self.deployment = deployment
        self.samples = samples
        self.out = out
        self.seconds = seconds
        self.photos = photos
        self.paced = paced
        self.run = uuid.uuid4().hex[:8]
        self.log = OpLog(out / "ops.jsonl")
        self.admin = deployment.client(f"scale-admin-{self.run}", ("gallery-admin", "auditor"))
        #: subject id -> the person it shows ("" unknown).
        self.people: dict[str, str] = {}
        self.import_id = f"scale-{self.run}"
        #: Photos the gateway took (a batch refused otherwise than UNAVAILABLE is not retried).
        self.submitted = 0
        self.stop_at = 0.0
        self._searches = 0
        self._searches_lock = threading.Lock()

    def prepare(self) -> None:
        """Enrols one photo of each probe's person, so every search has a right answer from the start."""
        for name in ("obama.jpg", "biden.jpg"):
            subject = f"SCALE-{self.run}-{PEOPLE[name]}"
            self.admin.enroll(self.samples / name, subject)
            self.people[subject] = PEOPLE[name]

    def start(self) -> None:
        """Runs the workload to its end; writes ``started`` when it begins."""
        started = time.time()
        self.stop_at = started + self.seconds
        (self.out / "started").write_text(str(started))
        threads = [threading.Thread(target=self.importer, name="import")]
        threads += [threading.Thread(target=self.searcher, args=(n,), name=f"search-{n}") for n in range(2)]
        threads += [threading.Thread(target=self.reviewer, name="review")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def importer(self) -> None:
        """Submits the import in batches, paced to end at 85 % of the run so it flows through the
        faults (or, unpaced, as fast as the gateway takes them)."""
        items = list(variants(self.samples, self.photos, seed=int(self.run, 16)))
        code, _ = retried(
            self.log,
            "import.start",
            lambda: self.admin.start_import(self.import_id, "scale-run", len(items)),
            self.stop_at,
        )
        if code != "OK":
            return
        pace = 0.85 * self.seconds / (len(items) / BATCH) if self.paced else 0.0
        for first in range(0, len(items), BATCH):
            batch = []
            for number in range(first, min(first + BATCH, len(items))):
                person, data = items[number]
                subject = f"SCALE-{self.run}-i{number:04d}"
                self.people[subject] = person
                batch.append(gateway_pb2.ImportItem(item=number, subject_id=subject, image=data, image_ref=subject))
            began = time.time()
            code, _ = retried(
                self.log,
                "import.submit",
                lambda b=batch: self.admin.submit_import(self.import_id, b),
                self.stop_at + 120,
                items=[first, first + len(batch)],
            )
            if code == "OK":
                self.submitted += len(batch)
            time.sleep(max(0.0, pace - (time.time() - began)))

    def searcher(self, lane: int) -> None:
        """Searches until the end, each search its own case, judged against the person of its probe."""
        rng = random.Random(lane)
        # One long-lived client (one channel) per investigator, as an application keeps it: the
        # channel has to find its way round a gateway that goes.
        client: GatewayClient | None = None
        client_user = ""
        while time.time() < self.stop_at:
            with self._searches_lock:
                number = self._searches
                self._searches += 1
            user = f"scale-investigator-{self.run}-{number // SEARCHES_PER_INVESTIGATOR}"
            if client is None or user != client_user:
                if client is not None:
                    client.close()
                client, client_user = self.deployment.client(user, ("investigator",)), user
            probe, person = PROBES[rng.randrange(len(PROBES))]
            case = f"SCALE-{self.run}-{number:05d}"
            code, found = self.log.call(
                "search",
                lambda c=client, p=probe, n=case: c.search(
                    self.samples / p, case_number=n, purpose="investigation", max_candidates=5, authorisation="W-SCALE"
                ),
                case=case,
                expected=person,
            )
            if code == "OK" and found is not None:
                top = found.candidates[0].subject_id if found.candidates else ""
                self.log.add(
                    Op(
                        "answer",
                        time.time(),
                        time.time(),
                        "OK",
                        "",
                        {
                            "case": case,
                            "search_id": found.search_id,
                            "top": top,
                            "right": self.people.get(top, "?") == person,
                            "expected": person,
                        },
                    )
                )
            time.sleep(0.3)
        if client is not None:
            client.close()

    def reviewer(self) -> None:
        """Two blind reviewers take the newest waiting searches of this run and conclude on the
        first candidate, each conclusion retried while the gateway is unavailable (a retry of one
        that had landed is answered as already given). A search stays on a reviewer's list while
        its other candidates wait, so each reviewer skips the searches it has concluded on: the
        reviews go on through every fault of the run, not only the first."""
        reviewers = [self.deployment.client(f"scale-reviewer-{self.run}-{n}", ("reviewer",)) for n in "ab"]
        concluded: list[set[str]] = [set() for _ in reviewers]
        while time.time() < self.stop_at:
            for number, client in enumerate(reviewers):
                code, page = self.log.call(
                    "review.list",
                    lambda c=client: c.pending_reviews(
                        case_prefix=f"SCALE-{self.run}", order=gateway_pb2.PENDING_ORDER_NEWEST_FIRST, limit=12
                    ),
                )
                if code != "OK" or page is None:
                    continue
                waiting = [found for found in page.searches if found.search_id not in concluded[number]]
                for found in waiting[:3]:
                    # Blind: the candidates show only after the reviewer's analysis of the probe.
                    self.conclude(client, f"scale-reviewer-{self.run}-{'ab'[number]}", found)
                    concluded[number].add(found.search_id)
            time.sleep(2)

    def conclude(self, client: GatewayClient, reviewer: str, found: gateway_pb2.SearchReview) -> None:
        """One reviewer's analysis of a search's probe, their look at the probe and the first
        candidate, then their conclusion on it."""
        deadline = self.stop_at + 60
        code, _ = retried(
            self.log,
            "review.analyse",
            lambda: client.record_analysis(found.search_id, True),
            deadline,
            search_id=found.search_id,
            reviewer=reviewer,
        )
        if code not in ("OK", "FAILED_PRECONDITION", "ALREADY_EXISTS"):
            return
        # A conclusion is recorded only after the reviewer has seen the probe and the candidate.
        for rank in (0, 1):
            code, _ = retried(
                self.log,
                "review.photo",
                lambda r=rank: client.search_photo(found.search_id, r),
                deadline,
                search_id=found.search_id,
                reviewer=reviewer,
            )
            if code != "OK":
                return
        retried(
            self.log,
            "review.submit",
            lambda: client.submit_review(
                found.search_id, 1, gateway_pb2.DECISION_CONFIRM, "scale run", ["eyes", "nose", "mouth"]
            ),
            deadline,
            search_id=found.search_id,
            reviewer=reviewer,
            rank=1,
        )


def audit_rows(dsn: str, run: str) -> list[tuple[int, str, str, str, str, str]]:
    """This run's audit records from PostgreSQL: sequence, event id, kind, case number, actor, details."""
    with psycopg.connect(dsn) as db:
        return list(
            db.execute(
                "SELECT sequence, event_id, kind, case_number, actor, details_json FROM audit_record "
                "WHERE case_number LIKE %s OR details_json LIKE %s ORDER BY sequence",
                (f"SCALE-{run}-%", f"%scale-{run}%"),
            )
        )


def check(workload: Workload, settle_s: float) -> dict[str, Any]:
    """Waits for the import to settle, then counts what was lost or doubled (goal: none)."""
    admin = workload.admin
    deadline = time.time() + settle_s
    status = None
    while time.time() < deadline:
        code, status = workload.log.call("import.status", lambda: admin.import_status(workload.import_id))
        # Every photo the gateway took has a result (those it refused are counted lost below).
        if code == "OK" and status is not None and status.done >= workload.submitted:
            break
        time.sleep(1)
    results = admin.import_results(workload.import_id)
    per_item = Counter(result.item.item for result in results)
    outcomes = Counter(ingest_pb2.Outcome.Name(result.outcome) for result in results)
    ops = workload.log.ops
    ok_searches = [op for op in ops if op.kind == "search" and op.code == "OK"]
    answers = [op for op in ops if op.kind == "answer"]
    ok_reviews = {
        (op.fields["search_id"], op.fields["reviewer"]) for op in ops if op.kind == "review.submit" and op.code == "OK"
    }
    # The chain is written after the answer (events wait durably in JetStream): give it until
    # every OK search and conclusion is in, or CHAIN_WAIT_S, before counting what it lacks.
    deadline = time.time() + CHAIN_WAIT_S
    while True:
        rows = audit_rows(workload.deployment.audit_dsn, workload.run)
        searches_recorded = Counter(case for _, _, kind, case, _, _ in rows if kind == "search.completed")
        reviews_recorded = Counter(
            (json.loads(details)["search_id"], json.loads(details).get("rank"), actor)
            for _, _, kind, _, actor, details in rows
            if kind == "review.submitted"
        )
        all_in = all(searches_recorded[op.fields["case"]] for op in ok_searches) and all(
            reviews_recorded[(search, 1, reviewer)] for search, reviewer in ok_reviews
        )
        if all_in or time.time() > deadline:
            break
        time.sleep(2)
    # The matcher names the photos it enrolled together in one record; each photo once.
    enrolled = Counter(
        photo.get("item")
        for _, _, kind, _, _, details in rows
        if kind == "gallery.import_enrolled" and json.loads(details).get("import_id") == workload.import_id
        for photo in json.loads(details).get("records", [])
    )
    verdict = admin.verify_audit()
    return {
        "run": workload.run,
        "import": {
            "photos": workload.photos,
            "results": len(results),
            "outcomes": dict(outcomes),
            "lost": workload.photos - len(per_item) + outcomes.get("OUTCOME_FAILED", 0),
            "doubled_results": sum(1 for n in per_item.values() if n > 1),
            "doubled_enrolments": sum(1 for n in enrolled.values() if n > 1),
            "enrolled_not_recorded": outcomes.get("OUTCOME_ENROLLED", 0) - len(enrolled),
        },
        "searches": {
            "ok": len(ok_searches),
            "lost": sum(1 for op in ok_searches if searches_recorded[op.fields["case"]] == 0),
            "doubled": sum(1 for n in searches_recorded.values() if n > 1),
            "recorded_but_answer_lost": sum(
                1 for op in ops if op.kind == "search" and op.code != "OK" and searches_recorded[op.fields["case"]]
            ),
            "wrong_answers": sum(1 for op in answers if not op.fields["right"]),
        },
        "reviews": {
            "ok": len(ok_reviews),
            "recorded": sum(reviews_recorded.values()),
            "lost": sum(1 for search, reviewer in ok_reviews if not reviews_recorded[(search, 1, reviewer)]),
            "doubled": sum(1 for n in reviews_recorded.values() if n > 1),
        },
        "chain": {"ok": verdict.ok, "records_checked": verdict.records_checked, "problem": verdict.problem},
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the workload and the checks; exits 0 once the checks are written (the host judges them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=420)
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--settle", type=float, default=240, help="seconds the import may take to finish after the run")
    parser.add_argument("--samples", type=Path, default=Path(".cache/samples"))
    parser.add_argument(
        "--import-only",
        action="store_true",
        help="only the import, unpaced, timed from its first photo to its last result",
    )
    args = parser.parse_args(argv)
    workload = Workload(Deployment.from_env(), args.samples, args.out, args.seconds, args.photos, not args.import_only)
    if args.import_only:
        began = time.time()
        (args.out / "started").write_text(str(began))
        workload.stop_at = began + args.seconds
        workload.importer()
        checks = check(workload, args.settle)
        finished = max(op.end for op in workload.log.ops if op.kind == "import.status" and op.code == "OK")
        checks["import"]["seconds"] = round(finished - began, 1)
    else:
        workload.prepare()
        workload.start()
        checks = check(workload, args.settle)
    (args.out / "checks.json").write_text(json.dumps(checks, indent=2))
    print(json.dumps(checks, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
