"""Which threshold a search uses: the model's calibration record, or refusal without one."""

from __future__ import annotations

from candor.common.v1 import common_pb2
from candor_kit.errors import PreconditionFailed
from candor_kit.model_registry import CalibrationRecord, ModelRegistry


class CalibrationGate:
    """Looks up a model's calibration; refuses an uncalibrated model unless allowed for testing."""

    def __init__(self, registry: ModelRegistry | None, allow_uncalibrated: bool, required_rule: str = "any") -> None:
        self._registry = registry
        self.allow_uncalibrated = allow_uncalibrated
        #: "every-group": only a calibration that held every group to its targets is used.
        self.required_rule = required_rule
        #: The calibrations this gateway has recorded on the chain as in use.
        self._recorded: set[str] = set()

    def summary(self) -> list[dict[str, object]]:
        """What the registry holds, for the audit record of the gateway's configuration."""
        records = self._registry.all() if self._registry and self._registry.folder.exists() else []
        return [
            {
                "model": r.model_id,
                "version": r.model_version,
                "threshold": r.threshold,
                "calibration_id": r.calibration_id,
                "rule": r.rule,
            }
            for r in records
        ]

    def fmr_curve(self, model: common_pb2.ModelRef) -> CalibrationRecord | None:
        """The calibration record a search ran under (read once per search; its ``fmr_at`` gives
        the FMR at each candidate's distance); None when the model is not calibrated."""
        record = self._registry.get(model.id, model.version) if self._registry else None
        return record if record is not None and record.calibration_id == model.calibration_id else None

    def unrecorded(self, model: common_pb2.ModelRef) -> CalibrationRecord | None:
        """The calibration a calibrated ``model`` runs under, until this gateway has recorded it
        in use (``recorded``); None after, or for an uncalibrated model."""
        if not model.calibration_id or model.calibration_id in self._recorded:
            return None
        return self.fmr_curve(model)

    def recorded(self, calibration_id: str) -> None:
        """Note that the chain holds this calibration's ``calibration.in_use`` record."""
        self._recorded.add(calibration_id)

    def calibrated(self, model: common_pb2.ModelRef) -> common_pb2.ModelRef:
        """The model reference with the calibrated threshold and calibration id filled in."""
        record = self._registry.get(model.id, model.version) if self._registry else None
        if record is None:
            if not self.allow_uncalibrated:
                raise PreconditionFailed(
                    f"model {model.id} {model.version} has no calibration record; run `candor model calibrate` "
                    "on labelled data first"
                )
            return model
        if self.required_rule != "any" and record.rule != self.required_rule:
            raise PreconditionFailed(
                f"the calibration of {model.id} {model.version} follows the rule {record.rule}; this deployment "
                f"requires {self.required_rule}: run `candor model calibrate {model.id} --per-group` with groups.csv"
            )
        if record.metric != model.metric:
            raise PreconditionFailed(
                f"calibration of {model.id} is for {record.metric}, the model reports {model.metric}"
            )
        calibrated = common_pb2.ModelRef()
        calibrated.CopyFrom(model)
        calibrated.threshold = record.threshold
        calibrated.calibration_id = record.calibration_id
        return calibrated
