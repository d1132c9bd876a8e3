"""Handing back the pages of the gallery's files that a full read left resident in the matcher.

Building the candidate index reads every vector of the Qdrant Edge shard once, through the shard's
memory-mapped files. Those pages then stay resident in the matcher (740 MiB at a million faces:
VmRSS 1.6 GiB for 0.9 GiB of its own memory, and a container's memory limit is charged for them)
though searches never read them again: the index holds its own copy. ``MADV_PAGEOUT`` (Linux 5.4)
asks the kernel to reclaim exactly those pages: clean ones are dropped, dirty ones written back
first, so nothing the shard holds changes, and a later read faults a page back in from the file.
Where the kernel does not know the advice, nothing happens.
"""

from __future__ import annotations

import ctypes
import errno
import sys
from pathlib import Path

import structlog

log = structlog.get_logger("candor.matcher.pages")

#: madvise(2)'s advice number for "reclaim these pages now" (linux/mman.h).
MADV_PAGEOUT = 21


def mapped_ranges(folder: Path, maps: str) -> list[tuple[int, int]]:
    """The address ranges, in ``maps`` (the text of /proc/<pid>/maps), of files under ``folder``."""
    prefix = f"{folder.resolve()}/"
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, _, end = fields[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def page_out(folder: Path) -> int:
    """Ask the kernel to reclaim this process's resident pages of the files mapped from under
    ``folder``; returns how many bytes of mappings it took the advice for (0 off Linux, or on a
    kernel without MADV_PAGEOUT)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    advised = 0
    for start, end in mapped_ranges(folder, maps):
        if madvise(start, end - start, MADV_PAGEOUT) == 0:
            advised += end - start
            continue
        error = ctypes.get_errno()
        if error == errno.EINVAL:  # a kernel before 5.4: the pages stay, as before
            log.info("gallery_pages_kept", reason="the kernel does not take MADV_PAGEOUT")
            return advised
        # ENOMEM: the shard unmapped this file meanwhile (a segment replaced); nothing to hand back.
    return advised
