"""What an evaluation reads and which face it measures: LFW's pairs.txt as it is, a pair list that
yields nothing refused up front, a fingerprint over the files used, the face rule, and thresholds
that never round across the boundary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from candor_eval.calibration import _round_down
from candor_eval.dataset import load_dataset
from candor_eval.embedding import chosen_face
from candor_eval.metrics import fmr_at, threshold_for_fmr


@pytest.fixture
def lfw_like(samples: Path, tmp_path: Path) -> Path:
    """Folders named as LFW names its files: <name>/<name>_000n.jpg."""
    root = tmp_path / "lfw"
    for name, photos in {"Barack_Obama": ["obama.jpg", "obama2.jpg"], "Joe_Biden": ["biden.jpg"]}.items():
        (root / name).mkdir(parents=True)
        for number, photo in enumerate(photos, start=1):
            shutil.copyfile(samples / photo, root / name / f"{name}_{number:04d}.jpg")
    return root


def test_lfw_pairs_txt_is_read_as_it_is(lfw_like: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "2\t1\nBarack_Obama\t1\t2\nBarack_Obama\t1\tJoe_Biden\t1\nBarack_Obama\t2\t1\nJoe_Biden\t1\tBarack_Obama\t2\n"
    )
    dataset = load_dataset(lfw_like, pairs)
    assert [(p.left, p.right, p.mated, p.fold) for p in dataset.pairs or []] == [
        ("Barack_Obama/Barack_Obama_0001.jpg", "Barack_Obama/Barack_Obama_0002.jpg", True, 0),
        ("Barack_Obama/Barack_Obama_0001.jpg", "Joe_Biden/Joe_Biden_0001.jpg", False, 0),
        ("Barack_Obama/Barack_Obama_0002.jpg", "Barack_Obama/Barack_Obama_0001.jpg", True, 1),
        ("Joe_Biden/Joe_Biden_0001.jpg", "Barack_Obama/Barack_Obama_0002.jpg", False, 1),
    ]
    pairs.write_text("2\t1\nBarack_Obama\t1\t2\n")
    with pytest.raises(ValueError, match="1 pair lines, LFW's header says 2 folds of 2"):
        load_dataset(lfw_like, pairs)
    pairs.write_text("1\t1\nBarack_Obama\t1\t3\nBarack_Obama\t1\tJoe_Biden\t1\n")
    with pytest.raises(ValueError, match="Barack_Obama/Barack_Obama_0003 is not in the dataset"):
        load_dataset(lfw_like, pairs)


def test_a_pair_list_that_yields_no_pair_is_refused_before_anything_is_embedded(lfw_like: Path, tmp_path: Path) -> None:
    empty = tmp_path / "pairs.csv"
    empty.write_text("left,right,mated\n")
    with pytest.raises(ValueError, match="yields no pairs"):
        load_dataset(lfw_like, empty)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(lfw_like, tmp_path / "missing.csv")


def test_the_fingerprint_covers_the_pair_list_and_groups_given(lfw_like: Path, tmp_path: Path) -> None:
    plain = load_dataset(lfw_like).fingerprint()
    groups = tmp_path / "groups.csv"
    groups.write_text("identity,group\nBarack_Obama,A\nJoe_Biden,B\n")
    labelled = load_dataset(lfw_like, groups_file=groups).fingerprint()
    groups.write_text("identity,group\nBarack_Obama,B\nJoe_Biden,B\n")
    relabelled = load_dataset(lfw_like, groups_file=groups).fingerprint()
    assert len({plain, labelled, relabelled}) == 3


def test_the_face_rule_picks_the_centre_face_or_the_widest() -> None:
    boxes = [(0.0, 0.0, 300.0, 300.0), (450.0, 350.0, 100.0, 100.0), (900.0, 700.0, 80.0, 80.0)]
    assert chosen_face(boxes, 1000, 800, "centre") == 1
    assert chosen_face(boxes, 1000, 800, "largest") == 0
    with pytest.raises(ValueError, match="unknown face rule 'left'"):
        chosen_face(boxes, 1000, 800, "left")


def test_a_calibrated_threshold_never_rounds_across_the_next_non_mated_distance() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        impostor = rng.uniform(0.3, 0.9, 2000).astype(np.float32)
        boundary = threshold_for_fmr(impostor, 1e-3)
        assert boundary is not None
        written = _round_down(boundary)
        assert written <= boundary and float(np.float32(written)) == written  # one number in every dtype
        assert fmr_at(impostor, written) <= 1e-3  # round(boundary, 6) exceeds the target in some draws


def test_a_threshold_far_from_the_balance_point_is_flagged() -> None:
    from candor_eval.report import _far_from_balance

    # w600k_mbf at its nominal 0.6 on aligned crops: no false match, but 5.3 % of mates missed.
    far = {"eer": 0.004, "eer_threshold": 0.84, "at_operating_threshold": {"threshold": 0.6, "fmr": 0.0, "fnmr": 0.053}}
    assert "far from this data's balance point" in "".join(_far_from_balance(far))
    balanced = {"threshold": 0.642, "fmr": 0.001, "fnmr": 0.0}
    near = {"eer": 0.004, "eer_threshold": 0.64, "at_operating_threshold": balanced}
    assert _far_from_balance(near) == []
