"""The ``candor`` command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict, MessageToJson, Parse
from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2
from candor_cli import report as oversight
from candor_cli.case_export import check_complete, check_records, export_file_stem, render_html
from candor_cli.deploy_secrets import init_secrets
from candor_cli.eval_commands import add_commands as add_eval_commands
from candor_cli.events import follow, run_relay
from candor_cli.gallery import SourceError, add_gallery_commands, run_gallery
from candor_cli.models import add_models_commands, run_models
from candor_cli.processes import StackError
from candor_cli.proficiency import add_proficiency_commands, run_proficiency
from candor_cli.reembed import run_model_command
from candor_cli.reviews import add_review_commands, run_review
from candor_cli.rpc_errors import answered_late, rpc_error_text
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER, REVIEW, SERVICES, LocalStack, default_data_dir
from candor_cli.webhooks import DEFAULT_BACKOFF_S, dead_letters
from candor_client import GatewayClient, consumer_config
from candor_kit import catalogue
from candor_kit.bus import NatsLogin
from candor_kit.logging import configure_command_logging
from candor_kit.subjects import inbox_prefix
from candor_kit.tokens import PERSON_ROLES, SERVICE_ACCOUNT_ROLES, issue_token, load_private_key


def _parser() -> argparse.ArgumentParser:
    # The connection options are accepted before or after the command; SUPPRESS keeps a later
    # level from overwriting what an earlier one set.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=argparse.SUPPRESS, help="the local stack's folder (CANDOR_DATA)")
    common.add_argument("--gateway", default=argparse.SUPPRESS, help="gateway host:port (CANDOR_GATEWAY)")
    common.add_argument(
        "--token", default=argparse.SUPPRESS, help="bearer token (prefer CANDOR_TOKEN: flags show in ps)"
    )
    parser = argparse.ArgumentParser(prog="candor", description="Accountable face search.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="run the local process stack").add_subparsers(
        dest="action", required=True
    )
    up = stack.add_parser("up", help="start nats-server and the five services", parents=[common])
    up.add_argument(
        "--policy", type=Path, help="the gateway's policy.yaml (default: the stack's own, written on first start)"
    )
    up.add_argument(
        "--require-calibration", action="store_true", help="refuse searches with a model that has no calibration record"
    )
    up.add_argument(
        "--compose",
        type=Path,
        action="append",
        metavar="FILE",
        help="run the services with the settings and NATS users of these compose files (repeatable)",
    )
    up.add_argument(
        "--postgres-dsn-file",
        type=Path,
        help="with --compose: keep the audit chain in this PostgreSQL (a file with its connection string)",
    )
    stack.add_parser("down", help="stop the stack", parents=[common])
    stack.add_parser("status", help="show the stack's processes", parents=[common])
    add = stack.add_parser(
        "add",
        help="start one more process of a service: another import worker, or another model's detector or embedder",
        parents=[common],
    )
    add.add_argument("service", choices=("detector", "embedder", "gateway", "audit"))
    add.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of this process only, e.g. CANDOR_EMBEDDER_ENGINE=sface (repeatable)",
    )

    enroll = commands.add_parser("enroll", parents=[common], help="add a face to the gallery")
    enroll.add_argument("image", type=Path)
    enroll.add_argument("--subject", required=True, help="the subject id (a booking number, say)")
    enroll.add_argument("--face", type=int, default=None, help="face index when the photo has several")
    enroll.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    enroll.add_argument("--json", action="store_true")

    search = commands.add_parser("search", parents=[common], help="search the gallery with a probe photo")
    search.add_argument("image", type=Path)
    search.add_argument("--case", required=True, help="the case number")
    search.add_argument("--purpose", required=True, help="an allowed purpose")
    search.add_argument("--face", type=int, default=None, help="face index when the probe has several")
    search.add_argument("--max", type=int, default=0, help="most candidates to show")
    search.add_argument(
        "--authorisation", default="", metavar="REF", help="the warrant, order or approval the search rests on"
    )
    search.add_argument("--json", action="store_true")

    faces = commands.add_parser("faces", parents=[common], help="list the faces of a photo")
    faces.add_argument("image", type=Path)
    faces.add_argument("--json", action="store_true")

    delete = commands.add_parser("delete", parents=[common], help="expunge a subject, or one record, from the gallery")
    delete.add_argument("subject", nargs="?", help="the subject id (every record of it)")
    delete.add_argument("--record", help="one record id (one enrolled photo) instead of a whole subject")
    delete.add_argument("--reason", required=True)

    add_eval_commands(commands, common)
    add_review_commands(commands, common)
    add_proficiency_commands(commands, common)
    add_gallery_commands(commands, common)
    add_models_commands(commands)

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(dest="action", required=True)
    verify = audit.add_parser("verify", help="verify the hash chain, signatures and checkpoints", parents=[common])
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="checkpoints you kept (JSON lines, as published on candor.audit.v1.checkpoint)",
    )
    verify.add_argument(
        "--keep", type=Path, metavar="FILE", help="append the chain's new signed checkpoint to FILE (JSON lines)"
    )

    export = audit.add_parser("export", help="a case's discovery export, as JSON and HTML", parents=[common])
    export.add_argument("--case", required=True, help="the case number")
    export.add_argument("--out", type=Path, default=Path("."), help="folder for case-<CASE>.json and .html")
    check = audit.add_parser("check-export", help="check an export's records offline against the audit key")
    check.add_argument("export_file", type=Path, metavar="FILE", help="the case-<CASE>.json of `audit export`")
    check.add_argument("--public-key", type=Path, help="the audit public key you pinned (PEM); default: the export's")

    report = commands.add_parser(
        "report", help="the oversight report of a period, from the audit log", parents=[common]
    )
    report.add_argument("--from", dest="start", required=True, type=dt.date.fromisoformat, help="first day, YYYY-MM-DD")
    report.add_argument("--to", dest="end", required=True, type=dt.date.fromisoformat, help="last day, YYYY-MM-DD")
    report.add_argument("--out", type=Path, default=Path("report"), help="folder for the report and its charts")
    report.add_argument(
        "--format", choices=("md", "html", "csv", "pdf"), default="md", help="md and html come with PNG charts"
    )

    token = commands.add_parser("token", help="bearer tokens").add_subparsers(dest="action", required=True)
    issue = token.add_parser("issue", help="sign a JWT for a user (development and tests)", parents=[common])
    issue.add_argument("--user", required=True, help="the person's user name, or the service account's name")
    held = issue.add_mutually_exclusive_group(required=True)
    held.add_argument("--roles", help=f"a person's roles, comma-separated: {', '.join(PERSON_ROLES)}")
    held.add_argument(
        "--service-account",
        choices=SERVICE_ACCOUNT_ROLES,
        help="a machine identity's one role (an integration's token; its calls are audited under --user)",
    )
    issue.add_argument("--ttl", default="8h", help="lifetime: 3600, 90m, 8h (default 8h)")
    issue.add_argument("--key", type=Path, help="signing key (PEM); default: the local stack's")
    issue.add_argument("--issuer", help="default: the local stack's issuer")
    issue.add_argument("--audience", default=AUDIENCE)

    secrets_init = commands.add_parser("secrets", help="deployment secrets").add_subparsers(
        dest="action", required=True
    )
    init = secrets_init.add_parser("init", help="generate NATS passwords and the first operator token into DIR")
    init.add_argument("folder", type=Path, metavar="DIR")
    init.add_argument("--force", action="store_true", help="replace secrets already there")

    events = commands.add_parser("events", help="the event feed integrations follow").add_subparsers(
        dest="action", required=True
    )
    follow = events.add_parser(
        "follow",
        help="print lifecycle events as JSON lines through a durable consumer (resumes where it left off)",
        description="Follow the event feed as the integration NATS user: CANDOR_NATS_URL, CANDOR_NATS_USER and "
        "CANDOR_NATS_PASSWORD_FILE, or the running local stack's.",
    )
    follow.add_argument("--data", type=Path, default=argparse.SUPPRESS, help="the local stack's folder (CANDOR_DATA)")
    follow.add_argument("--durable", required=True, help="the consumer's name: the server remembers how far it got")
    start = follow.add_mutually_exclusive_group()
    start.add_argument("--since", type=_moment, help="a new consumer starts at this time (ISO 8601, UTC if no zone)")
    start.add_argument("--from-sequence", type=int, default=0, help="a new consumer starts at this stream sequence")
    follow.add_argument("--kinds", default="", help="comma-separated kinds, e.g. review.confirmed,probe.deleted")
    follow.add_argument("--count", type=int, default=0, help="stop after this many events (default: never)")
    follow.add_argument("--idle", type=float, default=0.0, help="stop after this many seconds without an event")
    relay_cmd = events.add_parser(
        "relay",
        help="deliver the feed to HTTPS webhooks, signed, with retries and dead letters (runs until stopped)",
        description="Relay the event feed to the endpoints of a YAML file (docs/integrations.md), as the webhooks "
        "NATS user: CANDOR_NATS_URL, CANDOR_NATS_USER and CANDOR_NATS_PASSWORD_FILE, or the running local stack's.",
    )
    relay_cmd.add_argument("--data", type=Path, default=argparse.SUPPRESS, help="the local stack's folder")
    relay_cmd.add_argument("--endpoints", type=Path, required=True, help="the endpoints file (YAML)")
    relay_cmd.add_argument("--metrics-address", default="", help="serve Prometheus metrics here, e.g. 0.0.0.0:9464")
    relay_cmd.add_argument(
        "--backoff", default="", help="seconds between attempts, comma-separated (default 5,30,120,600,1800,3600)"
    )
    dead = events.add_parser("dead-letters", help="list the webhook deliveries that failed for good, as JSON lines")
    dead.add_argument("--data", type=Path, default=argparse.SUPPRESS, help="the local stack's folder")
    dead.add_argument("--endpoint", default="", help="one endpoint's only")

    settings = commands.add_parser("settings", help="list the settings each service reads")
    settings.add_argument(
        "service", nargs="?", choices=sorted([*catalogue.SERVICES, *catalogue.WEB_SERVICES]), help="one service only"
    )
    return parser


def _stack(args: argparse.Namespace) -> LocalStack:
    data = getattr(args, "data", None) or default_data_dir()
    return LocalStack(
        Path(data),
        policy=getattr(args, "policy", None),
        require_calibration=getattr(args, "require_calibration", False),
        compose=getattr(args, "compose", None),
        postgres_dsn=dsn_file.read_text().strip() if (dsn_file := getattr(args, "postgres_dsn_file", None)) else "",
    )


def _client(args: argparse.Namespace) -> GatewayClient:
    stack = _stack(args)
    address = getattr(args, "gateway", None) or os.environ.get("CANDOR_GATEWAY")
    if not address:
        state = stack.state()
        if state is None or not stack.running():
            raise StackError(f"no running stack in {stack.data}; run `candor stack up` or pass --gateway")
        address = state.gateway
    token = getattr(args, "token", None) or os.environ.get("CANDOR_TOKEN")
    if not token:
        token = stack.token()
    return GatewayClient(address, token)


def _report(client: GatewayClient, start: dt.date, end: dt.date, folder: Path, form: str) -> int:
    """Fetch the period's audit records and write the oversight report with its charts."""
    if end < start:
        raise ValueError("--to is before --from")
    since, until = Timestamp(), Timestamp()
    since.FromDatetime(dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC))
    until.FromDatetime(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC))
    evidence = client.audit_records(None, until, kinds=oversight.EVIDENCE_KINDS)
    made = oversight.compute(client.audit_records(since, until), (start.isoformat(), end.isoformat()), evidence)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report.{form}"
    if form == "csv":
        path.write_text(oversight.to_csv(made))
    elif form == "pdf":
        path.write_bytes(oversight.to_pdf(made))
    else:
        images = oversight.charts(made, folder)
        text = oversight.markdown(made, images)
        path.write_text(text if form == "md" else oversight.to_html(text, images))
    print(f"oversight report {start} to {end}: {made.records} audit records -> {path}")
    searches = sum(made.searches_by_purpose.values())
    print(f"  searches {searches}, refused searches {made.outcomes['refused']}, deletions {len(made.deletions)}")
    print(
        f"  policy refusals {sum(made.refusals_by_rule.values())}, interface errors {sum(made.errors.values())}; "
        f"busiest: {made.searches_by_user.most_common(3)}"
    )
    return 0


def _moment(text: str) -> dt.datetime:
    """An ISO 8601 time for --since; UTC when it names no zone."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _issue_token(args: argparse.Namespace) -> str:
    """A signed JWT from --key (or the local stack's key) with the given user, roles and lifetime."""
    ttl = re.fullmatch(r"(\d+)([smhd]?)", args.ttl)
    if ttl is None:
        raise ValueError(f"--ttl {args.ttl!r} is not a lifetime like 3600, 90m or 8h")
    seconds = int(ttl.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[ttl.group(2)]
    if args.service_account:
        roles = [args.service_account]
    else:
        roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    stack = _stack(args)
    state = stack.state()
    key = args.key or (Path(state.token_key) if state else stack.token_key)
    issuer = args.issuer or (state.issuer if state else LOCAL_ISSUER)
    return issue_token(load_private_key(key.read_bytes()), args.user, roles, seconds, issuer, args.audience)


def _keep_checkpoint(path: Path, checkpoint: audit_pb2.Checkpoint) -> None:
    """Append a checkpoint to a JSON-lines file unless one for that record is already there."""
    lines = path.read_text().splitlines() if path.exists() else []
    if any(Parse(line, audit_pb2.Checkpoint()).sequence == checkpoint.sequence for line in lines if line.strip()):
        return
    with path.open("a") as handle:
        handle.write(MessageToJson(checkpoint, indent=None) + "\n")
    print(f"kept the checkpoint of record {checkpoint.sequence} in {path}")


def _operator_login(stack: LocalStack) -> NatsLogin | None:
    """How `candor eval --via-stack` and `candor model calibrate` reach NATS (as ``operator``)."""
    return _nats_login(stack, "operator")


def _required_login(args: argparse.Namespace, role: str) -> NatsLogin:
    """``_nats_login`` for a command that cannot run without NATS: StackError saying what to set."""
    login = _nats_login(_stack(args), role)
    if login is None:
        raise StackError(
            f"no NATS to reach: set CANDOR_NATS_URL, with CANDOR_NATS_USER ({role}) and CANDOR_NATS_PASSWORD_FILE, "
            "or run `candor stack up`"
        )
    return login


def _nats_login(stack: LocalStack, role: str) -> NatsLogin | None:
    """CANDOR_NATS_URL with CANDOR_NATS_USER and CANDOR_NATS_PASSWORD_FILE when set, else the
    running local stack as its ``role`` user; None when neither is there."""
    url = os.environ.get("CANDOR_NATS_URL")
    if url:
        user = os.environ.get("CANDOR_NATS_USER", "")
        return NatsLogin(
            url, user, os.environ.get("CANDOR_NATS_PASSWORD_FILE", ""), inbox_prefix(user) if user else "_INBOX"
        )
    return stack.nats_login(role) if stack.running() else None


def _export_case(client: GatewayClient, case_number: str, folder: Path) -> int:
    """Write case-<CASE>.json (the records, each with hash and signature) and a readable .html."""
    export = client.export_case(case_number)
    problems = check_records(list(export.records), export.verification.public_key_pem)
    if export.verification.ok:
        problems += check_complete(export, export.verification.public_key_pem)[0]
    folder.mkdir(parents=True, exist_ok=True)
    stem = export_file_stem(case_number)
    json_file, html_file = folder / f"{stem}.json", folder / f"{stem}.html"
    json_file.write_text(MessageToJson(export, preserving_proto_field_name=True) + "\n")
    html_file.write_text(render_html(export, problems))
    print(f"case {case_number}: {len(export.records)} records -> {json_file}, {html_file}")
    print("chain OK" if export.verification.ok else f"chain BROKEN: {export.verification.problem}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 0 if export.verification.ok and not problems else 1


def _check_export(path: Path, public_key: Path | None) -> int:
    """Check every record of an export against the audit key, without the database."""
    export = Parse(path.read_text(), gateway_pb2.ExportCaseResponse())
    pem = public_key.read_text() if public_key else export.verification.public_key_pem
    problems = check_records(list(export.records), pem)
    incomplete, covers = check_complete(export, pem)
    problems += incomplete
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if not problems:
        print(f"{len(export.records)} records of case {export.case_number}: hashes and signatures OK")
        print(covers)
    return 1 if problems else 0


def _print_settings(services: list[str]) -> None:
    """Markdown tables: the settings every service shares, then each service's own."""
    tables = [("every service", catalogue.COMMON)]
    for name in services:
        if name in catalogue.WEB_SERVICES:
            tables.append((f"{name}: none of the shared settings, only these", catalogue.WEB_SERVICES[name]))
        else:
            tables.append((name, catalogue.SERVICES[name]))
    for title, settings in tables:
        print(f"### {title}\n\n| setting | default | meaning |\n|---|---|---|")
        for setting in settings:
            if setting.required:
                default = "**required**"
            elif setting.required_if:
                default = f"required when `{setting.required_if[0].name}={setting.required_if[1]}`"
            else:
                default = f"`{setting.default}`" if setting.default else ""
            secret = " (secret: from a Secret, never a ConfigMap)" if setting.secret else ""
            print(f"| `{setting.name}` | {default} | {setting.doc}{secret} |")
        print()


def _unreadable_photos_warning(count: int) -> str:
    """What an expunge that kept photos it could not place tells the gallery admin."""
    if count == 1:
        what = "one stored gallery photo has a header Candor cannot read: whether it is this subject's"
        kept = "it was kept"
    else:
        what = f"{count} stored gallery photos have headers Candor cannot read: whether they are this subject's"
        kept = "they were kept"
    return (
        f"warning: {what} cannot be told, so {kept}. The audit event subject.deleted names them; ask an "
        'operator to inspect them (deploy/README.md, "A stored photo Candor cannot read").'
    )


def _print_json(message: object) -> None:
    """A reply as JSON with every field, zeros included: a candidate at distance 0 (the enrolled
    photo itself) keeps its ``distance``, an uncalibrated model its empty ``calibration_id``."""
    as_dict = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)  # type: ignore[arg-type]
    print(json.dumps(as_dict, indent=2))


def _run(args: argparse.Namespace) -> int:
    if args.command == "stack":
        stack = _stack(args)
        if args.action == "up":
            state = stack.up()
            print(f"stack up in {stack.data}")
            for name in SERVICES:
                print(f"  {name:<9} {state.addresses[name]}  SERVING")
            print(f"gateway: {state.gateway}")
            print(f"review:  http://{state.addresses[REVIEW]}/  (the review desk; sign in with `candor token issue`)")
            print(f"tokens:  signed by {stack.token_key} (`candor token issue`; the CLI mints its own)")
            if not stack.require_calibration:
                print("models:  uncalibrated models allowed (developer stack; see `candor model calibrate`)")
        elif args.action == "down":
            stack.down()
            print("stack down")
        elif args.action == "add":
            settings = dict(_setting(text) for text in args.settings)
            key = stack.add_replica(args.service, settings=settings)
            state = stack.state()
            print(f"  {key:<11} {state.addresses[key] if state else ''}  SERVING")
        else:
            state = stack.state()
            print(json.dumps({"running": stack.running(), **(state.__dict__ if state else {})}, indent=2))
        return 0

    if args.command == "models":
        return run_models(args)

    if args.command == "audit" and args.action == "check-export":
        return _check_export(args.export_file, args.public_key)

    if args.command == "token":
        print(_issue_token(args))
        return 0

    if args.command == "secrets":
        for path in init_secrets(args.folder, force=args.force):
            print(f"wrote {path}")
        return 0

    if args.command == "settings":
        _print_settings([args.service] if args.service else [*sorted(catalogue.SERVICES), *catalogue.WEB_SERVICES])
        return 0

    if args.command == "events" and args.action == "relay":
        login = _required_login(args, "webhooks")
        backoff = tuple(float(s) for s in args.backoff.split(",")) if args.backoff else DEFAULT_BACKOFF_S
        return run_relay(login, args.endpoints, args.metrics_address, backoff)

    if args.command == "events" and args.action == "dead-letters":
        login = _required_login(args, "operator")
        for letter in asyncio.run(dead_letters(login, args.endpoint)):
            print(json.dumps(letter))
        return 0

    if args.command == "events":
        config = consumer_config(
            args.durable,
            [kind.strip() for kind in args.kinds.split(",") if kind.strip()],
            since=args.since,
            from_sequence=args.from_sequence,
        )
        login = _required_login(args, "integration")
        asyncio.run(follow(login, config, count=args.count, idle_s=args.idle))
        return 0

    if args.command in ("eval", "model"):
        # Loaded only here: the models, SciPy and matplotlib take seconds that no other command needs.
        from candor_eval.cli import run_calibrate, run_eval

        stack = _stack(args)
        login = _operator_login(stack)
        if args.command == "eval":
            return run_eval(args, login)
        return run_calibrate(args, stack.registry, login)

    with _client(args) as client:
        if args.command == "enroll":
            metadata = dict(item.split("=", 1) for item in args.meta)
            with answered_late("enrolment"):
                enrolled = client.enroll(args.image, args.subject, args.face, metadata)
            if args.json:
                _print_json(enrolled)
            else:
                state = "enrolled" if enrolled.created else "already enrolled"
                print(f"{state}: {args.subject} (record {enrolled.record_id}, face {enrolled.quality.face_size_px} px)")
        elif args.command == "search":
            found = client.search(args.image, args.case, args.purpose, args.face, args.max, args.authorisation)
            if args.json:
                _print_json(found)
            else:
                _print_search(found)
        elif args.command == "faces":
            detected = client.faces(args.image)
            if args.json:
                _print_json(detected)
            else:
                print(f"{len(detected.faces)} face(s) in {detected.image_width}x{detected.image_height}")
                for index, face in enumerate(detected.faces):
                    b = face.box
                    print(f"  [{index}] box {b.x},{b.y} {b.width}x{b.height}  score {face.quality.detector_score:.2f}")
        elif args.command == "delete":
            if bool(args.subject) == bool(args.record):
                raise StackError("name a subject or --record RECORD_ID, not both")
            with answered_late("deletion"):
                if args.record:
                    gone = client.delete_record(args.record, args.reason)
                    print(f"deleted record {args.record} of {gone.subject_id}")
                else:
                    deleted = client.delete_subject(args.subject, args.reason)
                    print(f"deleted {deleted.deleted_records} record(s) of {args.subject}")
                    if deleted.unreadable_photos:
                        print(_unreadable_photos_warning(deleted.unreadable_photos), file=sys.stderr)
        elif args.command == "review":
            return run_review(client, args)
        elif args.command == "proficiency":
            return run_proficiency(client, args)
        elif args.command == "gallery" and args.action in ("reembed", "models"):
            return run_model_command(client, args)
        elif args.command == "gallery":
            return run_gallery(client, args)
        elif args.command == "report":
            return _report(client, args.start, args.end, args.out, args.format)
        elif args.command == "audit" and args.action == "export":
            return _export_case(client, args.case, args.out)
        elif args.command == "audit":
            kept = [
                Parse(line, audit_pb2.Checkpoint())
                for line in (args.checkpoints.read_text().splitlines() if args.checkpoints else [])
                if line.strip()
            ]
            result = client.verify_audit(kept)
            if args.keep and result.ok and result.HasField("latest_checkpoint"):
                _keep_checkpoint(args.keep, result.latest_checkpoint)
            if args.json:
                _print_json(result)
            elif result.ok:
                print(
                    f"audit chain OK: {result.records_checked} records, {result.signatures_checked} signatures, "
                    f"{result.checkpoints_checked} checkpoints, head {result.head_hash}"
                )
            else:
                print(
                    f"audit chain BROKEN at record {result.first_bad_sequence}: {result.problem} "
                    f"({result.records_checked} records checked before it)"
                )
                for missing in result.missing:
                    where = f"stream message {missing.stream_sequence}"
                    print(f"  missing from the chain: {where}: {missing.kind} {missing.event_id}")
                if result.missing_events > len(result.missing):
                    print(f"  ... and {result.missing_events - len(result.missing)} more")
            return 0 if result.ok else 1
    return 0


def _setting(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``candor stack add --set``; ValueError (a usage error) otherwise."""
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("CANDOR_"):
        raise ValueError(f"--set {text!r}: give a Candor setting as NAME=VALUE, e.g. CANDOR_EMBEDDER_ENGINE=sface")
    return name, value


def _print_search(found: gateway_pb2.SearchResponse) -> None:
    model = found.model
    calibration = f"calibration {model.calibration_id[:12]}" if model.calibration_id else "UNCALIBRATED"
    print(
        f"search {found.search_id}  model {model.id} {model.version}  "
        f"threshold {model.threshold:g} ({model.metric} distance, lower is closer; {calibration})"
    )
    if not found.candidates:
        print(f"  no candidate within the threshold ({model.metric} distance {model.threshold:g} or less)")
    for candidate in found.candidates:
        print(f"  {candidate.rank:>2}. {candidate.subject_id:<24} distance {candidate.distance:.4f}")
    print(f"NOTICE: {found.notice}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    configure_command_logging()
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except grpc.RpcError as error:
        print(f"error: {rpc_error_text(error)}", file=sys.stderr)
        return 2
    except (StackError, SourceError, OSError, ValueError) as error:
        print(f"error: {_error_text(error)}", file=sys.stderr)
        return 2


def _error_text(error: Exception) -> str:
    """What went wrong in words, also for an error that carries none (a bare timeout is OSError)."""
    if text := str(error):
        return text
    if isinstance(error, TimeoutError):
        return (
            "NATS or a Candor service did not answer in time; check that the stack is up "
            "(candor stack status, or the deployment's health) and run the command again"
        )
    return "the command stopped without a reason; run it again, and report it if it happens again"


if __name__ == "__main__":
    sys.exit(main())
