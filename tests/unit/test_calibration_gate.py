"""The gateway searches only with a calibrated model unless configured otherwise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from candor.common.v1 import common_pb2
from candor_gateway.calibration import CalibrationGate
from candor_kit import PreconditionFailed
from candor_kit.model_registry import CalibrationRecord, ModelRegistry

MODEL = common_pb2.ModelRef(id="dlib-resnet-v1", version="1.0", metric="euclidean", dimension=128, threshold=0.6)


def record(threshold: float = 0.55) -> CalibrationRecord:
    return CalibrationRecord(
        model_id="dlib-resnet-v1", model_version="1.0", metric="euclidean", threshold=threshold, target_fmr=1e-3,
        achieved_fmr=9e-4, tar_at_threshold=0.97, mated_pairs=500, non_mated_pairs=79000,
        dataset_root="/data/agency", dataset_fingerprint="f" * 64, created_at="2026-11-28T00:00:00Z",
    )  # fmt: skip


def test_calibrated_threshold_replaces_the_model_default(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.save(record(0.55))
    model = CalibrationGate(registry, allow_uncalibrated=False).calibrated(MODEL)
    assert model.threshold == pytest.approx(0.55)
    assert model.calibration_id == record(0.55).calibration_id
    assert MODEL.threshold == pytest.approx(0.6)  # the input is not modified


def test_uncalibrated_model_is_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(PreconditionFailed, match="no calibration record"):
        CalibrationGate(ModelRegistry(tmp_path), allow_uncalibrated=False).calibrated(MODEL)
    allowed = CalibrationGate(ModelRegistry(tmp_path), allow_uncalibrated=True).calibrated(MODEL)
    assert allowed.calibration_id == "" and allowed.threshold == pytest.approx(0.6)


def test_another_version_is_not_covered_by_the_calibration(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.save(record())
    newer = common_pb2.ModelRef()
    newer.CopyFrom(MODEL)
    newer.version = "2.0"
    with pytest.raises(PreconditionFailed):
        CalibrationGate(registry, allow_uncalibrated=False).calibrated(newer)


def test_a_deployment_can_demand_the_every_group_rule(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.save(record(0.55))  # the overall rule
    with pytest.raises(PreconditionFailed, match="follows the rule overall; this deployment requires every-group"):
        CalibrationGate(registry, allow_uncalibrated=False, required_rule="every-group").calibrated(MODEL)
    registry.save(dataclasses.replace(record(0.5), rule="every-group"))
    model = CalibrationGate(registry, allow_uncalibrated=False, required_rule="every-group").calibrated(MODEL)
    assert model.threshold == pytest.approx(0.5)


def test_the_fmr_at_a_candidates_distance_is_read_off_the_calibrations_curve_as_an_upper_bound(tmp_path: Path) -> None:
    curve = [[0.2, 0.0], [0.4, 0.0001], [0.55, 0.0009]]
    registry = ModelRegistry(tmp_path)
    registry.save(dataclasses.replace(record(0.55), fmr_curve=curve))
    gate = CalibrationGate(registry, allow_uncalibrated=False)
    calibration = gate.fmr_curve(gate.calibrated(MODEL))
    assert calibration is not None
    assert calibration.fmr_at(0.1) == 0.0
    assert calibration.fmr_at(0.3) == 0.0001  # between points: the next one's, never less
    assert calibration.fmr_at(0.55) == 0.0009
    assert calibration.fmr_at(0.7) is None  # beyond the threshold: not measured
    assert gate.fmr_curve(MODEL) is None  # a search that ran uncalibrated
    # A record without a curve keeps the id it always had.
    assert record(0.55).calibration_id == dataclasses.replace(record(0.55), fmr_curve=[]).calibration_id
