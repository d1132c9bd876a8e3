"""The model registry: each model's calibration record, from an evaluation on labelled data.

A record ties a model id and version to the threshold that met a target false-match rate on a
named dataset (by its fingerprint), with the per-group rates at that threshold. The gateway
searches only with a calibrated model unless told otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


#: How many points of the FMR curve a calibration record keeps.
FMR_CURVE_POINTS = 40


@dataclass(frozen=True)
class CalibrationRecord:
    """One calibration of one model version."""

    model_id: str
    model_version: str
    metric: str
    threshold: float
    target_fmr: float
    achieved_fmr: float
    tar_at_threshold: float
    mated_pairs: int
    non_mated_pairs: int
    dataset_root: str
    dataset_fingerprint: str
    created_at: str
    per_group: list[dict[str, Any]] = field(default_factory=list)
    #: "overall": the target FMR is met over all non-mated pairs; "every-group": it is also met
    #: within each group (``candor model calibrate --per-group``).
    rule: str = "overall"
    #: With the every-group rule: the FPIR each group's non-mated 1:N searches meet too.
    target_fpir: float | None = None
    #: 1:N figures at the threshold (rank-1, FNIR, FPIR with intervals), overall and per group.
    identification: dict[str, Any] = field(default_factory=dict)
    #: Groups of the labels left out of an every-group calibration by name (--leave-out-group).
    groups_left_out: list[str] = field(default_factory=list)
    #: [distance, FMR] at FMR_CURVE_POINTS distances up to the threshold: the share of the set's
    #: non-mated pairs at that distance or closer, so a reviewer reads what a candidate's distance meant
    #: on the calibration set.
    fmr_curve: list[list[float]] = field(default_factory=list)

    def fmr_at(self, distance: float) -> float | None:
        """The calibrated FMR at ``distance``, read off the curve at the first point at or beyond
        it (an upper bound); None beyond the curve or without one."""
        for point, fmr in self.fmr_curve:
            if point >= distance:
                return fmr
        return None

    @property
    def calibration_id(self) -> str:
        """SHA-256 of the record's canonical JSON: names exactly this calibration.

        Fields at their defaults are left out, so records written before a field existed keep
        their ids.
        """
        fields = asdict(self)
        defaults = (
            ("rule", "overall"),
            ("target_fpir", None),
            ("identification", {}),
            ("groups_left_out", []),
            ("fmr_curve", []),
        )
        for name, default in defaults:
            if fields[name] == default:
                del fields[name]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def evidence(self) -> dict[str, Any]:
        """What the audit chain keeps of this calibration (``model.calibrated`` when an operator
        makes it, ``calibration.in_use`` when a gateway first uses it): the figures an oversight
        report shows beside the searches run under it."""
        return {
            "model": self.model_id,
            "version": self.model_version,
            "threshold": self.threshold,
            "target_fmr": self.target_fmr,
            "achieved_fmr": self.achieved_fmr,
            "calibration_id": self.calibration_id,
            "dataset_fingerprint": self.dataset_fingerprint,
            "rule": self.rule,
            "created_at": self.created_at,
            "target_fpir": self.target_fpir,
            "metric": self.metric,
            "per_group": self.per_group,
            "identification": self.identification,
        }


class ModelRegistry:
    """Calibration records as JSON files in one folder, one file per model version."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, model_id: str, version: str) -> Path:
        return self.folder / f"{_SAFE.sub('_', model_id)}@{_SAFE.sub('_', version)}.json"

    def get(self, model_id: str, version: str) -> CalibrationRecord | None:
        """The record for a model version, if it was calibrated."""
        path = self._path(model_id, version)
        if not path.exists():
            return None
        return CalibrationRecord(**json.loads(path.read_text()))

    def all(self) -> list[CalibrationRecord]:
        """Every record in the registry."""
        return [CalibrationRecord(**json.loads(p.read_text())) for p in sorted(self.folder.glob("*.json"))]

    def save(self, record: CalibrationRecord) -> Path:
        """Write a record atomically, replacing an earlier calibration of the same version."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(record.model_id, record.model_version)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True))
        os.replace(tmp, path)
        return path
