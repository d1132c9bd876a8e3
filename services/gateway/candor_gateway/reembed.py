"""Re-embedding the gallery with another model, and the switch to it.

The new model's detectors and embedders run beside the old ones. ``start`` checks that one is
running and that the model is calibrated (a search needs its threshold), and has the matcher make
the new model's collection beside the active one. The client then imports every record's photo into
it (``ListReembedWork`` names the records still missing, with their photo references), while
searches go on with the old model and new enrolments go to both. ``switch`` has the matcher check
that the new collection holds every record, then make it the active model in one write. The old
collection is kept, so a switch back needs no second re-embedding.
"""

from __future__ import annotations

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.access import Permission, require
from candor_gateway.calibration import CalibrationGate
from candor_gateway.routes import ModelRoutes
from candor_kit import AuditPublisher, Bus, InvalidInput, subjects
from candor_kit.gallery_models import reembed_event_id
from candor_kit.tokens import Principal

#: The most records one switch may leave out, named one by one in its audit record.
MAX_EXCUSED = 100_000


def _check_model_id(model_id: str) -> None:
    if not subjects.LANE.match(model_id):
        raise InvalidInput("model_id must be 1 to 64 of A-Z, a-z, 0-9, _ and -")


def _model(ref: object) -> dict[str, str]:
    return {"id": getattr(ref, "id", ""), "version": getattr(ref, "version", "")}


class ReembedDesk:
    """The gateway's re-embedding use cases."""

    def __init__(
        self, bus: Bus, audit: AuditPublisher, calibration: CalibrationGate, routes: ModelRoutes, timeout_s: float
    ) -> None:
        self._bus = bus
        self._audit = audit
        self._calibration = calibration
        self._routes = routes
        self._timeout = timeout_s

    async def start(self, principal: Principal, request: gateway_pb2.StartReembedRequest) -> matcher_pb2.GalleryModels:
        """Begin (or continue) re-embedding into a model whose embedder is running; audited once."""
        require(principal, Permission.START_REEMBED)
        _check_model_id(request.model_id)
        target = await self._routes.model(request.model_id)
        self._calibration.calibrated(target)  # refused unless searches could use it
        models = await self._bus.request(
            subjects.MATCH_BEGIN_REEMBED,
            matcher_pb2.BeginReembedRequest(target=target, origin=common_pb2.Origin(actor=principal.user)),
            matcher_pb2.GalleryModels,
            self._timeout,
        )
        # Recorded on every start under the re-embedding's one id (the matcher names each one): a
        # retry after a gateway lost once the matcher began records it, a continued one adds nothing.
        await self._audit.publish(
            "gallery.reembed_started",
            event_id=reembed_event_id(models, "started"),
            actor=principal.user,
            details={"active": _model(models.active), "target": _model(models.target)},
        )
        return models

    async def work(
        self, principal: Principal, request: gateway_pb2.ListReembedWorkRequest
    ) -> matcher_pb2.ListMissingRecordsResponse:
        """A page of the records the new model's collection lacks, with their photo references."""
        require(principal, Permission.LIST_REEMBED_WORK)
        _check_model_id(request.model_id)
        return await self._bus.request(
            subjects.MATCH_LIST_MISSING,
            matcher_pb2.ListMissingRecordsRequest(
                target_model_id=request.model_id, after=request.after, limit=request.limit
            ),
            matcher_pb2.ListMissingRecordsResponse,
            self._timeout,
        )

    async def switch(
        self, principal: Principal, request: gateway_pb2.SwitchGalleryModelRequest
    ) -> matcher_pb2.GalleryModels:
        """Make the new model the active one (audited, with every record left out)."""
        require(principal, Permission.SWITCH_MODEL)
        if not request.reason.strip():
            raise InvalidInput("a reason is required to switch the gallery's model")
        _check_model_id(request.model_id)
        if len(request.excused_record_ids) > MAX_EXCUSED:
            raise InvalidInput(f"at most {MAX_EXCUSED} records may be left out of one switch")
        models = await self._bus.request(
            subjects.MATCH_SWITCH_MODEL,
            matcher_pb2.SwitchModelRequest(
                target_model_id=request.model_id,
                excused_record_ids=request.excused_record_ids,
                origin=common_pb2.Origin(actor=principal.user),
                reason=request.reason,
            ),
            matcher_pb2.GalleryModels,
            # The check reads every record of both collections.
            max(self._timeout, 600.0),
        )
        # A switch sent again after its answer was lost is answered as done by the matcher; its
        # record here is one, under the re-embedding's id (the matcher's holds the same whole).
        await self._audit.publish(
            "gallery.model_switched",
            event_id=reembed_event_id(models, "switched"),
            actor=principal.user,
            details={
                "active": _model(models.active),
                "previous": _model(models.previous),
                "reason": request.reason,
                "records_left_out": sorted(request.excused_record_ids),
            },
        )
        return models

    async def models(self, principal: Principal) -> matcher_pb2.GalleryModels:
        """The gallery's active model and any re-embedding under way."""
        require(principal, Permission.GET_GALLERY_MODELS)
        return await self._routes.models()
