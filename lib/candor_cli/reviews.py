"""``candor review``: the two-reviewer workflow from the command line (list, show, analyse, submit)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson
from PIL import Image, UnidentifiedImageError

from candor.gateway.v1 import gateway_pb2
from candor_client import GatewayClient
from candor_kit import conclusions

STATUS = {
    gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED: "(blind)",
    gateway_pb2.CANDIDATE_STATUS_PENDING: "pending",
    gateway_pb2.CANDIDATE_STATUS_LEAD: "LEAD",
    gateway_pb2.CANDIDATE_STATUS_REJECTED: "rejected",
    gateway_pb2.CANDIDATE_STATUS_DISPUTED: "DISPUTED",
}
DECISION = conclusions.NAMES
#: The --decision choices: the record names, with "same" and "different" beside confirm and reject.
CHOICES = {**conclusions.VALUES, "same": gateway_pb2.DECISION_CONFIRM, "different": gateway_pb2.DECISION_REJECT}
ORDERS = {
    "oldest": gateway_pb2.PENDING_ORDER_OLDEST_FIRST,
    "newest": gateway_pb2.PENDING_ORDER_NEWEST_FIRST,
    "case": gateway_pb2.PENDING_ORDER_CASE,
}


def add_review_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    """``candor review list|show|submit``."""
    review = commands.add_parser("review", help="review search candidates").add_subparsers(dest="action", required=True)
    listing = review.add_parser("list", parents=[common], help="searches waiting for your review (all of them)")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--case", default="", help="only cases whose number starts with this")
    listing.add_argument("--purpose", default="", help="only searches made for this purpose")
    listing.add_argument("--order", choices=tuple(ORDERS), default="oldest")
    listing.add_argument("--disputed", action="store_true", help="only disputes waiting for you (supervisors)")
    listing.add_argument("--partly-reviewed", action="store_true", help="only searches you decided some candidates of")
    show = review.add_parser("show", parents=[common], help="a search and its review state")
    show.add_argument("search_id")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--photos",
        type=Path,
        metavar="DIR",
        help="save the probe and each candidate's photo here to compare them (reviewers and supervisors; "
        "a decision is recorded only after both photos were shown to you)",
    )
    analyse = review.add_parser(
        "analyse", parents=[common], help="record your analysis of a search's probe (before its candidates show)"
    )
    analyse.add_argument("search_id")
    judged = analyse.add_mutually_exclusive_group(required=True)
    judged.add_argument("--sufficient", action="store_true", help="the probe is good enough to compare")
    judged.add_argument("--insufficient", action="store_true", help="it is not (say why in --notes)")
    analyse.add_argument("--notes", default="")
    submit = review.add_parser("submit", parents=[common], help="record your conclusion on one candidate")
    submit.add_argument("search_id")
    submit.add_argument("--rank", type=int, required=True, help="the candidate's rank in the search, as shown to you")
    submit.add_argument(
        "--decision",
        choices=tuple(CHOICES),
        required=True,
        help="same (or confirm), probably-same, inconclusive, probably-different, different (or reject), insufficient",
    )
    submit.add_argument(
        "--features",
        default="",
        help="the facial features you relied on, comma-separated, from: " + ", ".join(conclusions.FEATURES),
    )
    submit.add_argument(
        "--notes", default="", help="why (required for every conclusion but same, and for a supervisor)"
    )


def run_review(client: GatewayClient, args: argparse.Namespace) -> int:
    """Run one ``candor review`` action."""
    if args.action == "submit":
        features = [feature.strip() for feature in args.features.split(",") if feature.strip()]
        done = client.submit_review(args.search_id, args.rank, CHOICES[args.decision], args.notes, features)
        words = conclusions.WORDS[conclusions.NAMES[CHOICES[args.decision]]]
        print(f"review {done.review_id} recorded: candidate {args.rank}, {words}; status {STATUS[done.status]}")
        return 0
    if args.action == "analyse":
        analysed = client.record_analysis(args.search_id, args.sufficient, args.notes)
        said = "sufficient to compare" if analysed.analysis == gateway_pb2.ANALYSIS_SUFFICIENT else "insufficient"
        print(f"analysis recorded: the probe of search {args.search_id} is {said}")
        return 0
    if args.action == "show":
        found = client.get_search(args.search_id)
        print(MessageToJson(found) if args.json else describe(found))
        if args.photos:
            save_photos(client, found, args.photos)
        return 0
    searches, total = client.all_pending_reviews(
        case_prefix=args.case,
        purpose=args.purpose,
        order=ORDERS[args.order],
        disputed_only=args.disputed,
        partly_reviewed_only=args.partly_reviewed,
    )
    if args.json:
        print(MessageToJson(gateway_pb2.ListPendingReviewsResponse(searches=searches, total=total)))
    else:
        print(f"{total} search(es) waiting for your review")
        for found in searches:
            print(describe(found))
    return 0


def save_photos(client: GatewayClient, found: gateway_pb2.SearchReview, folder: Path) -> None:
    """Save the probe and every candidate's photo of a search in ``folder`` (each view audited),
    naming each file by the search and rank; say which could not be shown and why."""
    folder.mkdir(parents=True, exist_ok=True)
    for rank in [0, *(reviewed.candidate.rank for reviewed in found.candidates)]:
        what = "probe" if rank == 0 else f"candidate {rank}"
        try:
            photo = client.search_photo(found.search_id, rank)
        except grpc.RpcError as refused:
            print(f"  {what}: not shown ({refused.details()})")  # type: ignore[attr-defined]
            continue
        try:
            kind = (Image.open(io.BytesIO(photo.image)).format or "img").lower()
        except (UnidentifiedImageError, OSError):
            kind = "img"
        path = folder / f"{found.search_id}-{'probe' if rank == 0 else f'candidate-{rank}'}.{kind}"
        path.write_bytes(photo.image)
        box = photo.face_box
        print(f"  {what}: {path} (face at x={box.x} y={box.y}, {box.width}x{box.height} px)")


def describe(found: gateway_pb2.SearchReview) -> str:
    """A search's review state as text."""
    lines = [
        f"search {found.search_id}  case {found.case_number}  purpose {found.purpose}  by {found.searched_by}  "
        f"({found.reviews_needed} confirmations make a lead)"
    ]
    if found.candidate_count and not found.candidates:
        lines.append(
            f"  {found.candidate_count} candidate(s) wait for your analysis of the probe: "
            f"candor review analyse {found.search_id} --sufficient (or --insufficient --notes WHY)"
        )
    for reviewed in found.candidates:
        candidate = reviewed.candidate
        status = STATUS[reviewed.status]
        distance = "distance hidden (score-blind)" if found.score_blind else f"distance {candidate.distance:.4f}"
        lines.append(f"  {candidate.rank:>2}. {candidate.subject_id:<24} {distance}  {status}")
        lines.extend(
            f"        {review.role} {review.reviewer}: {conclusions.WORDS[DECISION[review.decision]]}"
            + (f" [{', '.join(review.features)}]" if review.features else "")
            + (f" ({review.notes})" if review.notes else "")
            for review in reviewed.reviews
        )
    return "\n".join(lines)
