"""The container runs' guards against a full disk (scripts/test_containers.py), which CI's
test-bare once met: its pip install failed with "No space left on device"."""

from __future__ import annotations

import shutil
from pathlib import Path

from scripts.test_containers import (
    BUILD_LABEL,
    COMPOSE_DIR,
    ROOT,
    STAGE_REPOSITORY,
    build_commands,
    build_stages,
    free_space_problem,
)

#: Every Dockerfile the container runs build, by the image each makes.
DOCKERFILES = {
    **{f"candor/{name}:0.1.0": ROOT / "services" / name / "Dockerfile" for name in
       ("gateway", "detector", "embedder", "matcher", "audit", "review")},
    "candor/e2e:0.1.0": COMPOSE_DIR / "e2e.Dockerfile",
    **{f"candor/{name}-debian:bookworm": ROOT / "deploy" / "images" / f"{name}.Dockerfile" for name in
       ("nats", "postgres", "prometheus", "bare")},
}  # fmt: skip


def test_a_disk_with_room_for_the_run_raises_no_problem(tmp_path: Path) -> None:
    assert free_space_problem(tmp_path, need_gb=0) is None


def test_a_disk_short_of_space_says_how_much_it_has_needs_and_what_to_do(tmp_path: Path) -> None:
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    problem = free_space_problem(tmp_path, need_gb=free_gb + 100)
    assert problem is not None
    assert f"{free_gb:.1f} GB free" in problem
    assert f"needs about {free_gb + 100:.0f} GB" in problem
    assert "docker image prune" in problem and "run it again" in problem


def test_every_stage_of_every_build_is_tagged_and_labelled() -> None:
    """An earlier stage left untagged and unlabelled (1.2-1.3 GB, two a run) is never pruned."""
    multi_stage = 0
    for image, dockerfile in DOCKERFILES.items():
        commands = build_commands(image, dockerfile, ROOT, "candor/debian:bookworm")
        stages = build_stages(dockerfile)
        multi_stage += bool(stages)
        assert len(commands) == len(stages) + 1, image
        for command in commands:
            assert command[command.index("--label") + 1] == BUILD_LABEL
        for stage, command in zip(stages, commands, strict=False):
            assert command[command.index("--target") + 1] == stage
            assert command[command.index("--tag") + 1].startswith(f"{STAGE_REPOSITORY}:")
        final = commands[-1]
        assert "--target" not in final and final[final.index("--tag") + 1] == image
    # Each image's earlier stages get their own tag: two sharing one would untag the other's.
    tags = [c[c.index("--tag") + 1] for image, f in DOCKERFILES.items() for c in build_commands(image, f, ROOT, "b")]
    assert len(tags) == len(set(tags))
    assert multi_stage == 7, "the six services and the e2e runner build in two stages"


def test_only_the_stages_before_the_last_are_built_on_their_own(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("ARG BASE\nFROM ${BASE} AS deps\nRUN true\nFROM deps as build\nFROM ${BASE} AS runtime\n")
    assert build_stages(dockerfile) == ["deps", "build"]
