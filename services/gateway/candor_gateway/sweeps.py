"""The gateway's sweeps, every ``CANDOR_GATEWAY_RETENTION_SWEEP_S``: retained probes whose
retention has ended are deleted (``retention.ProbeSweep``), and imports nobody asks about are settled
(``ImportDesk.settle_open``).

A sweep is a janitor beside the gateway's serving: whatever one round meets, the gateway goes on
answering and the next round tries again. A round that leaves something unsettled is not hidden
either: ``candor_gateway_sweep_last_clean_timestamp_seconds`` stops moving, and the alert
``CandorRetentionSweepFailing`` fires after three intervals without a clean round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.errors import Error as NatsError

from candor_gateway.imports import ImportDesk
from candor_gateway.photos import PhotoStore
from candor_gateway.policy import PolicyHolder
from candor_gateway.retention import ProbeSweep
from candor_gateway.reviews import ReviewDesk
from candor_kit import AuditPublisher, CandorError
from candor_kit.metrics import SWEEP_INTERVAL, SWEEP_LAST_CLEAN

log = structlog.get_logger("candor.gateway.sweeps")


async def run_sweeps(
    photos: PhotoStore,
    desk: ReviewDesk,
    policy: PolicyHolder,
    audit: AuditPublisher,
    imports: ImportDesk,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Every ``interval_s`` until ``stop``: a round of each sweep. Either failing leaves the other
    to run, and neither ends the gateway."""
    probes = ProbeSweep(photos, desk, audit)
    sweeps: dict[str, Callable[[], Awaitable[int]]] = {
        "probes": lambda: probes.round(policy.current),
        "imports": imports.settle_open,
    }
    SWEEP_INTERVAL.set(interval_s)
    started = time.time()
    for name in sweeps:
        SWEEP_LAST_CLEAN.labels(name).set(started)
    while not stop.is_set():
        for name, run in sweeps.items():
            await run_round(name, run)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def run_round(name: str, run: Callable[[], Awaitable[int]]) -> None:
    """One round of one sweep; the metric moves only when it leaves nothing unsettled."""
    try:
        left = await run()
    except (CandorError, NatsError, OSError) as exc:  # NATS or the store away: the next round tries again
        log.warning("sweep_failed", sweep=name, error=str(exc) or type(exc).__name__)
        return
    except Exception:  # a defect: logged with its traceback, and the gateway goes on serving
        log.exception("sweep_failed", sweep=name)
        return
    if left:
        log.warning("sweep_incomplete", sweep=name, left=left)
        return
    SWEEP_LAST_CLEAN.labels(name).set(time.time())


__all__ = ["run_round", "run_sweeps"]
