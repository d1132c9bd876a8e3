"""Group commit: what arrives while one commit runs is committed together in the next, each caller
still getting its own answer (the matcher's enrolments: one disk sync for many photos)."""

from __future__ import annotations

import asyncio

import pytest

from candor_matcher.group_commit import GroupCommit


class Recorder:
    """A commit that records its groups and holds each until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = asyncio.Event()

    async def commit(self, items: list[int]) -> list[int | BaseException]:
        self.groups.append(items)
        await self.release.wait()
        return [ValueError(f"odd {n}") if n % 2 else n * 10 for n in items]


async def test_calls_arriving_during_a_commit_are_committed_together() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)  # the first commit is under way
    rest = [asyncio.create_task(group.submit(n)) for n in (2, 4, 6, 8)]
    await asyncio.sleep(0.01)
    recorder.release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [20, 40, 60, 80]
    assert recorder.groups == [[0], [2, 4, 6, 8]]


async def test_each_caller_gets_its_own_failure_and_the_others_their_answers() -> None:
    recorder = Recorder()
    recorder.release.set()
    group = GroupCommit(recorder.commit)
    answers = await asyncio.gather(*(group.submit(n) for n in range(4)), return_exceptions=True)
    assert answers[0] == 0 and answers[2] == 20
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "odd 1"
    assert isinstance(answers[3], ValueError) and str(answers[3]) == "odd 3"
    assert recorder.groups == [[0, 1, 2, 3]]


async def test_a_failed_commit_fails_its_group_only_and_the_next_group_commits() -> None:
    calls: list[list[int]] = []

    async def commit(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        if len(calls) == 1:
            await asyncio.sleep(0.01)
            raise OSError("disk full")
        return list(items)

    group = GroupCommit(commit)
    first = asyncio.create_task(group.submit(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(group.submit(2))
    with pytest.raises(OSError, match="disk full"):
        await first
    assert await second == 2
    assert calls == [[1], [2]]


async def test_groups_are_bounded_and_a_cancelled_caller_is_left_out() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit, max_group=3)
    blocker = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)
    waiting = {n: asyncio.create_task(group.submit(n)) for n in (2, 4, 6, 8, 10)}
    await asyncio.sleep(0.01)
    waiting[4].cancel()
    await asyncio.sleep(0)
    recorder.release.set()
    assert await blocker == 0
    assert [await waiting[n] for n in (2, 6, 8, 10)] == [20, 60, 80, 100]
    assert recorder.groups == [[0], [2, 6, 8], [10]]


async def test_closing_commits_what_waits_and_refuses_what_comes_after() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(group.submit(2))
    await asyncio.sleep(0)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="closed"):
        await group.submit(4)
    recorder.release.set()
    await closing
    assert (await first, await second) == (0, 20)
    assert recorder.groups == [[0], [2]]


async def test_a_lingering_group_waits_until_full_and_closing_commits_it_at_once() -> None:
    recorder = Recorder()
    recorder.release.set()
    group = GroupCommit(recorder.commit, max_group=3, linger_s=60.0)
    waiting = [asyncio.create_task(group.submit(n)) for n in (0, 2)]
    await asyncio.sleep(0.05)
    assert recorder.groups == []  # two of three: the group waits for a third
    third = asyncio.create_task(group.submit(4))
    assert await asyncio.wait_for(asyncio.gather(*waiting, third), 5) == [0, 20, 40]
    assert recorder.groups == [[0, 2, 4]]  # full: committed without waiting out the linger
    alone = asyncio.create_task(group.submit(6))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(group.close(), 5)  # a service stopping does not wait out the linger
    assert await alone == 60 and recorder.groups[-1] == [6]
