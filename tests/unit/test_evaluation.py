"""`candor eval` and `candor model calibrate` on a small real dataset, with the real models."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from candor_eval import CandorPipeline, PipelineSpec, PlainDlib, embed_all, embed_parallel, load_dataset, summarise
from candor_eval.calibration import CalibrationError, calibrate
from candor_eval.dataset import Dataset, LabelledImage, Pair
from candor_eval.embedding import Embedded, as_jpeg_or_png
from candor_eval.evaluate import identification, identity_groups, pair_scores
from candor_eval.metrics import fpir_at
from candor_faces.embedding import build_engine
from candor_kit.model_registry import CalibrationRecord, ModelRegistry

CANDOR = str(Path(sys.executable).parent / "candor")


@pytest.fixture(scope="module")
def embedded(sample_dataset: Path):  # type: ignore[no-untyped-def]
    dataset = load_dataset(sample_dataset)
    return dataset, embed_all(CandorPipeline(build_engine("dlib", None, None)), dataset.images)


def test_every_image_enrols_and_every_pair_is_scored(embedded) -> None:  # type: ignore[no-untyped-def]
    dataset, items = embedded
    assert len(dataset.images) == 10 and all(item.vector is not None for item in items)
    metrics = summarise(dataset, items, operating_threshold=0.6)
    verification = metrics["verification"]
    assert verification["mated_pairs"] == 3  # the three obama photos
    assert verification["non_mated_pairs"] == 45 - 3
    assert verification["at_operating_threshold"]["fnmr"] == 0.0
    assert metrics["failure_to_enrol"]["count"] == 0
    # 42 non-mated pairs measure FMR 1e-2 at best: the rarer targets are reported as unsupported.
    assert verification["tar_at_fmr"]["0.001"] is None
    identification = metrics["identification"]
    assert identification["rank1"] == 1.0


def test_per_group_rates_use_same_group_impostors_and_flag_small_groups(embedded) -> None:  # type: ignore[no-untyped-def]
    dataset, items = embedded
    groups = {g["group"]: g for g in summarise(dataset, items, 0.6, min_group_pairs=5)["per_group"]["groups"]}
    # Group A: obama (3 photos), biden, t1-person-0/1 -> 6 images, 15 pairs, 3 mated.
    assert groups["A"]["mated_pairs"] == 0 + 3 and groups["A"]["non_mated_pairs"] == 12
    assert groups["B"]["mated_pairs"] == 0 and groups["B"]["non_mated_pairs"] == 6
    assert groups["A"]["fmr"] == 0.0 and groups["B"]["fnmr"] is None  # no mated pairs: no figure


def test_failure_to_enrol_is_counted_with_its_reason(sample_dataset: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "someone").mkdir(parents=True)
    (broken / "someone" / "notes.jpg").write_bytes(b"not an image")
    (broken / "nobody").mkdir()
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(broken / "nobody" / "wall.png")
    items = embed_all(CandorPipeline(build_engine("dlib", None, None)), load_dataset(broken).images)
    assert sorted(item.failure or "" for item in items) == ["no face found", "unreadable: unreadable image"]


def test_pgm_and_gif_are_converted_for_the_detector(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "face.pgm"
    Image.new("L", (10, 10), 7).save(path)
    assert as_jpeg_or_png(path.read_bytes()).startswith(b"\x89PNG")


def test_calibration_meets_the_target_and_refuses_an_unsupported_one(embedded) -> None:  # type: ignore[no-untyped-def]
    dataset, items = embedded
    record = calibrate(dataset, items, "dlib-resnet-v1", "1.0", "euclidean", target_fmr=0.05)
    assert record.achieved_fmr <= 0.05
    assert 0.3 < record.threshold < 1.0
    assert record.non_mated_pairs == 42 and record.dataset_fingerprint == dataset.fingerprint()
    # The FMR curve up to the threshold: rising with the distance, ending at the achieved FMR.
    distances = [point for point, _ in record.fmr_curve]
    rates = [fmr for _, fmr in record.fmr_curve]
    assert len(record.fmr_curve) == 40 and distances == sorted(distances) and rates == sorted(rates)
    assert distances[-1] == pytest.approx(record.threshold) and rates[-1] == pytest.approx(record.achieved_fmr)
    with pytest.raises(CalibrationError, match="takes at least 1000"):
        calibrate(dataset, items, "dlib-resnet-v1", "1.0", "euclidean", target_fmr=0.001)


def test_candor_and_plain_dlib_agree_on_this_dataset(sample_dataset: Path) -> None:
    dataset = load_dataset(sample_dataset)
    plain = summarise(dataset, embed_all(PlainDlib(), dataset.images), 0.6)
    assert plain["failure_to_enrol"]["count"] == 0
    assert plain["verification"]["at_operating_threshold"]["fnmr"] == 0.0


def test_eval_command_writes_the_report_and_calibrate_command_the_registry(
    sample_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = subprocess.run(
        [CANDOR, "eval", str(sample_dataset), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert {"report.md", "metrics.json", "det-candor.png", "roc-candor.png", "hist-candor.png"} <= {
        p.name for p in out.iterdir()
    }
    assert json.loads((out / "metrics.json").read_text())["candor"]["verification"]["mated_pairs"] == 3
    report = (out / "report.md").read_text()
    assert "Per group at threshold 0.642" in report and "| FMR [95 % CI] |" in report  # SFace, the default
    # The fairness table comes first, naming the threshold's rule and what the pairs can show.
    assert report.index("## Per group first: candor at 0.642 (sface's nominal threshold)") < report.index("## candor")
    assert "Fewer than two groups have enough non-mated pairs to compare." in report
    assert "Face measured in a photo with several: the centre one" in report
    assert "| A | 3 | 12 | n/a (too few pairs) |" in report  # under 20 pairs: no figure, no interval

    registry = tmp_path / "models"
    calibrated = subprocess.run(
        [CANDOR, "--data", str(tmp_path / "no-stack"), "model", "calibrate", "dlib-resnet-v1", "--dataset",
         str(sample_dataset), "--target-fmr", "0.05", "--registry", str(registry)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr
    record = ModelRegistry(registry).get("dlib-resnet-v1", "1.0")
    assert record is not None and record.target_fmr == 0.05
    refused = subprocess.run(
        [CANDOR, "--data", str(tmp_path / "no-stack"), "model", "calibrate", "dlib-resnet-v1", "--dataset",
         str(sample_dataset), "--target-fmr", "0.0001", "--registry", str(registry)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2 and "cannot measure an FMR" in refused.stderr
    per_group = subprocess.run(
        [CANDOR, "--data", str(tmp_path / "no-stack"), "model", "calibrate", "dlib-resnet-v1", "--dataset",
         str(sample_dataset), "--target-fmr", "0.2", "--per-group", "--workers", "1", "--registry", str(registry)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # Only obama has several photos: the groups cannot measure an FPIR, said before any embedding.
    assert per_group.returncode == 2 and "A (3 strangers' searches; FPIR 0.01 takes 100)" in per_group.stderr
    assert "B (0 strangers' searches; FPIR 0.01 takes 100)" in per_group.stderr


def test_pair_list_with_folds_gives_the_k_fold_accuracy(sample_dataset: Path, tmp_path: Path) -> None:
    import shutil

    dataset_dir = tmp_path / "with-pairs"
    shutil.copytree(sample_dataset, dataset_dir)
    rows = [
        "left,right,mated,fold",
        "obama/obama.jpg,obama/obama2.jpg,yes,1",
        "obama/obama.jpg,biden/biden.jpg,no,1",
        "obama2.jpg,obama3.jpg,yes,2",  # bare file names resolve when unique
        "obama/obama3.jpg,t1-person-0/face.jpg,no,2",
    ]
    (dataset_dir / "pairs.csv").write_text("\n".join(rows) + "\n")
    dataset = load_dataset(dataset_dir)
    assert dataset.pairs is not None and len(dataset.pairs) == 4
    items = embed_all(CandorPipeline(build_engine("dlib", None, None)), dataset.images)
    metrics = summarise(dataset, items, 0.6)
    assert metrics["verification"]["mated_pairs"] == 2 and metrics["verification"]["non_mated_pairs"] == 2
    assert metrics["verification"]["kfold_accuracy"]["per_fold"] == [1.0, 1.0]


def _synthetic(count: int, identities: int, seed: int = 7) -> tuple[Dataset, list[Embedded]]:
    """Vectors clustered by identity, with groups by identity parity; no images behind them."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.2, (identities, 128))
    centres[1::2] = centres[1::2] * 0.6  # group B's people lie closer together
    people = [i % identities for i in range(count)]
    images = [LabelledImage(f"p{p:05d}", Path(f"/nowhere/{i}.jpg")) for i, p in enumerate(people)]
    vectors = [centres[p] + rng.normal(0, 0.03, 128) for p in people]
    dataset = Dataset(
        root=Path("/nowhere"), images=images, groups={f"p{p:05d}": "AB"[p % 2] for p in range(identities)}
    )
    return dataset, [Embedded(image, vector.astype(np.float32)) for image, vector in zip(images, vectors, strict=True)]


def test_every_pair_in_blocks_is_every_pair_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from candor_eval import evaluate

    monkeypatch.setattr(evaluate, "BLOCK_ROWS", 7)  # several blocks, the last one short
    dataset, items = _synthetic(60, 23)
    scores = pair_scores(dataset, items)
    ordered = sorted(items, key=lambda e: e.image.key)
    expected = [
        (float(np.linalg.norm(a.vector - b.vector)), a.image.identity == b.image.identity,
         dataset.group_of(a.image) if dataset.group_of(a.image) == dataset.group_of(b.image) else None)
        for a, b in itertools.combinations(ordered, 2)
    ]  # fmt: skip
    assert scores.distances.size == 60 * 59 // 2 == len(expected)
    np.testing.assert_allclose(scores.distances, [d for d, _, _ in expected], rtol=1e-5, atol=1e-5)
    assert scores.mated.tolist() == [m for _, m, _ in expected]
    names = [scores.group_names[c] if c >= 0 else None for c in scores.group_codes]
    assert names == [g for _, _, g in expected]


def test_pair_scores_take_seven_bytes_a_pair() -> None:
    dataset, items = _synthetic(500, 300)
    scores = pair_scores(dataset, items)
    held = scores.distances.nbytes + scores.mated.nbytes + scores.group_codes.nbytes
    assert held == 7 * (500 * 499 // 2)


def test_embedding_on_two_processes_gives_what_one_gives(sample_dataset: Path) -> None:
    images = load_dataset(sample_dataset).images
    one = list(embed_parallel(PipelineSpec(), images, 1))
    two = list(embed_parallel(PipelineSpec(), images, 2))
    assert [e.image for e in two] == images
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)


def test_per_group_calibration_holds_every_group_to_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dataset, "fingerprint", lambda self: "synthetic: no image files behind it")
    # 100 people of four photos each, two groups; a second, looser cluster for group B's people
    # makes its non-mated searches and pairs the ones that set the threshold.
    dataset, items = _synthetic(400, 100)
    overall = calibrate(dataset, items, "m", "1", "euclidean", target_fmr=0.01)
    strict = calibrate(dataset, items, "m", "1", "euclidean", target_fmr=0.01, per_group=True, target_fpir=0.01)
    assert strict.rule == "every-group" and strict.target_fpir == 0.01 and strict.threshold <= overall.threshold
    split = pair_scores(dataset, items).by_group()
    for group, (_, impostor) in split.items():
        assert np.mean(impostor <= strict.threshold) <= 0.01, group
    searches = identification(items, "euclidean", identity_groups(dataset))
    for group in ("A", "B"):
        non_mated = [s for s in searches if not s.mated and dataset.groups[s.probe_identity] == group]
        assert len(non_mated) == 200  # each of a group's 50 people a stranger in one fold, four photos each
        assert fpir_at(non_mated, strict.threshold) <= 0.01, group
    figures = {row["group"]: row for row in strict.identification["per_group"]}
    assert figures["A"]["fpir"]["trials"] == 200 and figures["A"]["fpir"]["rate"] <= 0.01
    assert figures["B"]["rank1"]["trials"] == 150 and strict.identification["threshold"] == strict.threshold
    with pytest.raises(CalibrationError, match=r"FPIR of 0.001 takes at least 1000 .* too few in: A \(200"):
        calibrate(dataset, items, "m", "1", "euclidean", target_fmr=0.01, per_group=True, target_fpir=0.001)
    with pytest.raises(CalibrationError, match=r"too few in: A \(\d+ non-mated pairs\)"):
        calibrate(dataset, items, "m", "1", "euclidean", target_fmr=2e-5, per_group=True)


def test_one_n_figures_are_given_per_group_with_intervals() -> None:
    dataset, items = _synthetic(400, 100)
    ident = summarise(dataset, items, operating_threshold=0.2)["identification"]
    assert ident["mated_searches"] == 300 and ident["non_mated_searches"] == 400
    live = ident["at_live_threshold"]
    assert live["threshold"] == 0.2 and live["fpir"]["trials"] == 400
    low, high = live["fnir"]["ci"]
    assert low <= live["fnir"]["rate"] <= high
    rows = {row["group"]: row for row in ident["per_group"]}
    assert set(rows) == {"A", "B"} and rows["A"]["non_mated_searches"] == 200
    assert rows["A"]["at_live_threshold"]["threshold"] == 0.2
    fixed = ident["fnir_at_fpir"]["0.01"]
    assert fixed is not None and rows["B"]["at_fpir_0.01"]["threshold"] == fixed["threshold"]
    # Fewer than 20 searches of a kind: no figure rather than one that would mislead.
    small, small_items = _synthetic(30, 10)
    assert summarise(small, small_items, 0.2)["identification"]["per_group"][0]["rank1"] is None


def test_records_without_a_rule_keep_their_calibration_id() -> None:
    fields = dict(
        model_id="m", model_version="1", metric="euclidean", threshold=0.5, target_fmr=1e-3, achieved_fmr=1e-3,
        tar_at_threshold=0.9, mated_pairs=1, non_mated_pairs=1000, dataset_root="/d", dataset_fingerprint="f",
        created_at="2026-11-28T00:00:00Z",
    )  # fmt: skip
    old = hashlib.sha256(json.dumps({**fields, "per_group": []}, sort_keys=True, separators=(",", ":")).encode())
    assert CalibrationRecord(**fields).calibration_id == old.hexdigest()  # type: ignore[arg-type]
    assert CalibrationRecord(**fields, rule="every-group").calibration_id != old.hexdigest()  # type: ignore[arg-type]


def test_a_cosine_model_is_scored_in_cosine_distance() -> None:
    dataset, items = _synthetic(40, 13)
    unit = [Embedded(e.image, (e.vector / np.linalg.norm(e.vector)).astype(np.float32)) for e in items]
    scores = pair_scores(dataset, unit, "cosine")
    ordered = sorted(unit, key=lambda e: e.image.key)
    expected = [1.0 - float(a.vector @ b.vector) for a, b in itertools.combinations(ordered, 2)]
    np.testing.assert_allclose(scores.distances, expected, atol=1e-5)
    dataset.pairs = [Pair(ordered[0].image.key, ordered[1].image.key, False)]
    [listed] = pair_scores(dataset, unit, "cosine").distances
    assert listed == pytest.approx(expected[0], abs=1e-5)


def test_group_sizes_are_checked_before_anything_is_embedded_and_a_group_can_be_left_out(
    sample_dataset: Path, tmp_path: Path
) -> None:
    from candor_eval.calibration import check_groups, leave_out_groups

    dataset = load_dataset(sample_dataset)  # group A: 6 photos of 4 people; B: 4 photos of 4
    with pytest.raises(CalibrationError, match=r"A \(12 non-mated pairs; FMR 0.1 takes 10\)|B \(6 non-mated pairs"):
        check_groups(dataset, 0.1, 0.5)
    leave_out_groups(dataset, ["B"])
    with pytest.raises(CalibrationError, match=r"A \(3 strangers' searches; FPIR 0.1 takes 10\)"):
        check_groups(dataset, 0.1, 0.1)
    with pytest.raises(CalibrationError, match="no group C in the labels; the groups are A"):
        leave_out_groups(dataset, ["C"])
    # Through the command, the refusal comes before any photo is embedded (no progress line).
    refused = subprocess.run(
        [CANDOR, "--data", str(tmp_path / "no-stack"), "model", "calibrate", "sface", "--dataset",
         str(sample_dataset), "--target-fmr", "0.1", "--per-group", "--registry", str(tmp_path / "models")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "B (6 non-mated pairs; FMR 0.1 takes 10)" in refused.stderr
    assert "embedded" not in refused.stderr
