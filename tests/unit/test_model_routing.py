"""Work and requests routed by model: subjects, consumer names and the gallery's model record rules."""

from __future__ import annotations

import pytest

from candor.common.v1 import common_pb2
from candor.matcher.v1 import matcher_pb2
from candor_kit import PreconditionFailed, subjects
from candor_kit.errors import ConfigError
from candor_kit.gallery_models import check_enrol_model, check_search_model
from candor_kit.ingest import MATCH, Stage


def test_detection_and_embedding_work_is_routed_by_model_and_matching_is_not() -> None:
    detect = Stage("detect", "dlib-resnet-v1")
    assert (detect.subject, detect.consumer) == (
        "candor.ingest.v1.work.detect.dlib-resnet-v1",
        "ingest-detect-dlib-resnet-v1",
    )
    assert (MATCH.subject, MATCH.consumer) == ("candor.ingest.v1.work.match", "ingest-match")
    assert Stage.from_consumer(detect.consumer) == detect
    assert Stage.from_consumer("ingest-match") == MATCH
    with pytest.raises(ValueError, match="routed by model"):
        Stage("embed")


def test_a_model_id_that_cannot_be_a_subject_token_is_refused() -> None:
    assert subjects.embed_for("buffalo_l") == "candor.embedder.v1.embed.buffalo_l"
    for bad in ("arcface.r100", "a*", "a>b", "", "x" * 65):
        with pytest.raises(ConfigError):
            subjects.lane(bad)


def _models(active: str, target: str = "") -> matcher_pb2.GalleryModels:
    return matcher_pb2.GalleryModels(
        active=common_pb2.ModelRef(id=active, version="1"),
        target=common_pb2.ModelRef(id=target, version="1") if target else None,
    )


def test_searches_use_the_active_model_and_enrolments_also_the_target() -> None:
    migrating = _models("old", "new")
    check_search_model(migrating, "old")
    with pytest.raises(PreconditionFailed, match="refused until the gallery is switched to it"):
        check_search_model(migrating, "new")
    check_enrol_model(migrating, "old")
    check_enrol_model(migrating, "new")
    with pytest.raises(PreconditionFailed, match="re-embed the gallery into it first"):
        check_enrol_model(migrating, "third")
    with pytest.raises(PreconditionFailed):
        check_search_model(_models("old"), "new")
    # A gallery without a model record yet takes any model (the first enrolment claims it).
    check_search_model(matcher_pb2.GalleryModels(), "any")
    check_enrol_model(matcher_pb2.GalleryModels(), "any")
