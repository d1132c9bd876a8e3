"""The ``candor eval`` and ``candor model calibrate`` commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from candor_eval.calibration import CalibrationError, calibrate, check_groups, leave_out_groups
from candor_eval.dataset import LabelledImage, load_dataset
from candor_eval.embedding import Embedded, PipelineSpec, PlainDlib, StackPipeline, embed_parallel
from candor_eval.evaluate import curves, pair_scores, summarise
from candor_eval.report import write_report
from candor_faces.embedding import build_engine
from candor_faces.engines import ModelInfo
from candor_kit import ConfigError, EnvReader, catalogue
from candor_kit.bus import NatsLogin
from candor_kit.model_files import DLIB_RESNET_MODEL_ID
from candor_kit.model_registry import CalibrationRecord, ModelRegistry
from candor_kit.wheel_packs import SFACE_MODEL_ID

#: dlib's published operating point (Euclidean), at which the plain-dlib anchor is measured.
DLIB_THRESHOLD = 0.6


def _model_and_spec(args: argparse.Namespace) -> tuple[ModelInfo, PipelineSpec]:
    """The model the run measures and how each worker builds its pipeline: a pack's (--model-pack),
    dlib's ResNet, or the default SFace; ConfigError if a pack is invalid or its licence not accepted."""
    if args.model_pack is None and args.model == DLIB_RESNET_MODEL_ID:
        model = build_engine("dlib", None, None).model
        return model, PipelineSpec(
            "candor", DLIB_RESNET_MODEL_ID, args.detector, args.crop_fallback, face_rule=args.face
        )
    if args.model_pack is None:
        return build_engine("sface", None, None).model, PipelineSpec("candor", SFACE_MODEL_ID, face_rule=args.face)
    accepted = EnvReader().get(catalogue.ACCEPT_MODEL_LICENCES)
    engine = build_engine("onnx", None, None, str(args.model_pack), accepted_licences=accepted)
    spec = PipelineSpec("candor", pack=str(args.model_pack), accepted_licences=accepted, face_rule=args.face)
    return engine.model, spec


def _embed(spec: PipelineSpec, images: list[LabelledImage], workers: int) -> list[Embedded]:
    """Embed on ``workers`` processes with a progress bar on a terminal (a line every tenth of the
    way into a log otherwise) and a closing count."""
    terminal = sys.stderr.isatty()
    step = max(1, len(images) // 10)
    with tqdm(total=len(images), desc=spec.name, unit="image", disable=not terminal) as bar:
        results = []
        for embedded in embed_parallel(spec, images, max(1, workers)):
            results.append(embedded)
            bar.update()
            if not terminal and (len(results) % step == 0 or len(results) == len(images)):
                print(f"{spec.name}: {len(results)} of {len(images)} images embedded", file=sys.stderr, flush=True)
    count = max(1, workers)
    print(f"{spec.name}: {len(results)} images embedded on {count} process{'es' if count > 1 else ''}", file=sys.stderr)
    return results


def run_eval(args: argparse.Namespace, login: NatsLogin | None = None) -> int:
    """Embed the dataset with Candor's pipeline (and plain dlib with --anchor) and write the report."""
    dataset = load_dataset(args.dataset, args.pairs, args.groups)
    try:
        model, spec = _model_and_spec(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    threshold = args.threshold if args.threshold is not None else model.threshold
    pipelines: list[PipelineSpec | StackPipeline] = [spec]
    if args.via_stack:
        if login is None:
            print("error: --via-stack needs a running stack (candor stack up) or CANDOR_NATS_URL", file=sys.stderr)
            return 2
        pipelines = [StackPipeline(login)]
    if args.anchor:
        pipelines.append(PipelineSpec("plain-dlib", face_rule=args.face))
    runs, plotted = {}, {}
    for pipeline in pipelines:
        if isinstance(pipeline, StackPipeline):
            embedded = pipeline.embed_all(dataset.images)
        else:
            embedded = _embed(pipeline, dataset.images, args.workers)
        anchor = pipeline.name == PlainDlib.name
        metric = "euclidean" if anchor else model.metric
        # The anchor is plain dlib, measured at dlib's published threshold whatever model runs beside it.
        used = DLIB_THRESHOLD if anchor and model.metric != "euclidean" else threshold
        if anchor and model.metric != "euclidean":
            rule = f"dlib's published {DLIB_THRESHOLD}"
        elif args.threshold is not None:
            rule = "given with --threshold"
        else:
            rule = f"{model.id}'s nominal threshold"
        try:
            scores = pair_scores(dataset, embedded, metric)
        except ValueError as error:
            failures = Counter(e.failure for e in embedded if e.vector is None)
            print(f"error: {pipeline.name}: {error}; failures to enrol: {dict(failures)}", file=sys.stderr)
            return 1
        runs[pipeline.name] = summarise(dataset, embedded, used, scores=scores, metric=metric)
        runs[pipeline.name]["face_rule"] = args.face
        runs[pipeline.name]["threshold_rule"] = rule
        plotted[pipeline.name] = curves(scores)
    report = write_report(args.out, runs, plotted)
    for name, metrics in runs.items():
        v, f = metrics["verification"], metrics["failure_to_enrol"]
        tar = v["tar_at_fmr"]["0.001"]
        print(
            f"{name:<11} EER {v['eer']:.4f}  TAR@FMR1e-3 {tar['tar']:.4f}  "
            if tar
            else f"{name:<11} EER {v['eer']:.4f}  ",
            end="",
        )
        ident = metrics["identification"]
        print(f"rank-1 {ident['rank1']:.4f}  failures {f['count']}")
        _print_searches("all", ident)
        for row in ident["per_group"]:
            _print_searches(f"group {row['group']}", row)
    print(f"report: {report}")
    return 0


def run_calibrate(args: argparse.Namespace, default_registry: Path, login: NatsLogin | None) -> int:
    """Calibrate a model, store the record, and audit it when a stack is reachable."""
    try:
        model, spec = _model_and_spec(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.model != model.id:
        print(
            f"error: {args.model!r} is not the model measured here ({model.id}; --model-pack for a pack's)",
            file=sys.stderr,
        )
        return 2
    dataset = load_dataset(args.dataset, args.pairs, args.groups)
    try:
        if args.leave_out_group:
            leave_out_groups(dataset, args.leave_out_group)
        if args.per_group and dataset.pairs is None:
            check_groups(dataset, args.target_fmr, args.target_fpir)
    except CalibrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    embedded = _embed(spec, dataset.images, args.workers)
    try:
        record = calibrate(
            dataset,
            embedded,
            model.id,
            model.version,
            model.metric,
            args.target_fmr,
            per_group=args.per_group,
            target_fpir=args.target_fpir,
            groups_left_out=args.leave_out_group,
        )
    except CalibrationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    registry = ModelRegistry(args.registry or Path(os.environ.get("CANDOR_MODEL_REGISTRY") or default_registry))
    path = registry.save(record)
    print(
        f"{record.model_id} {record.model_version}: threshold {record.threshold:.4f} for FMR {record.target_fmr:g} "
        f"{'in every group' if args.per_group else 'over all pairs'} "
        f"(measured {record.achieved_fmr:.4g} on {record.non_mated_pairs} non-mated pairs; "
        f"TAR {record.tar_at_threshold:.4f} on {record.mated_pairs} mated pairs)"
    )
    for group in record.per_group:
        fmr, fnmr = _rate(group["fmr"], group["fmr_ci"]), _rate(group["fnmr"], group["fnmr_ci"])
        print(f"  group {group['group']}: FMR {fmr}  FNMR {fnmr}")
    # The gateway reads its registry on each search (a re-embedding's target is calibrated while it runs).
    print(
        f"calibration {record.calibration_id[:16]}… written to {path}; "
        "a gateway reading this registry uses it from its next search"
    )
    if login is not None:
        asyncio.run(audit_calibration(login, record, os.environ.get("USER", "operator")))
        print("calibration audited as model.calibrated")
    return 0


async def audit_calibration(login: NatsLogin, record: CalibrationRecord, actor: str) -> None:
    """Publish the ``model.calibrated`` audit event, as the NATS user ``operator``."""
    from candor_kit import AuditPublisher, ensure_audit_stream

    bus = await login.connect("candor-cli")
    try:
        await ensure_audit_stream(bus)
        await AuditPublisher(bus, "operator").publish("model.calibrated", actor=actor, details=record.evidence())
    finally:
        await bus.close()


def _print_searches(label: str, figures: dict[str, Any]) -> None:
    """One line of 1:N figures: rank-1, FNIR at FPIR 0.01 overall's threshold, FNIR and FPIR live."""
    rank1 = figures["rank1"]
    rank1_text = f"{rank1:.4f}" if isinstance(rank1, float) else _rate(rank1 and rank1["rate"], rank1 and rank1["ci"])
    fixed = figures.get("at_fpir_0.01") or {}
    if "fnir_at_fpir" in figures:
        overall = figures["fnir_at_fpir"].get("0.01")
        fixed_text = f"{overall['fnir']:.4f}" if overall else "n/a (too few searches)"
    else:
        fixed_text = _measured(fixed.get("fnir"))
    live = figures["at_live_threshold"]
    print(
        f"  1:N {label}: rank-1 {rank1_text}  FNIR@FPIR0.01 {fixed_text}  at the live threshold "
        f"FNIR {_measured(live['fnir'])} FPIR {_measured(live['fpir'])}"
    )


def _measured(measured: dict[str, Any] | None) -> str:
    """A measured rate with its interval."""
    return "n/a (too few searches)" if measured is None else _rate(measured["rate"], measured["ci"])


def _rate(value: float | None, interval: tuple[float, float] | None) -> str:
    """A rate with its 95 % interval, or why there is none."""
    if value is None or interval is None:
        return "n/a (too few pairs)"
    return f"{value:.4g} [{interval[0]:.4g}, {interval[1]:.4g}]"
