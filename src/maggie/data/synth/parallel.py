"""Ordered parallel map with a tqdm bar; every task carries its own seed, so the output never depends on
the number of worker processes."""

from __future__ import annotations

import multiprocessing
import zlib
from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np
from tqdm import tqdm


def stream_id(name: str) -> int:
    """A stable 32-bit id for a named random stream (``hash()`` is salted per process, crc32 is not)."""
    return zlib.crc32(name.encode())


def sample_rng(seed: int, stream: str, index: int, *extra: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, stream name, index) only."""
    return np.random.default_rng([int(seed), stream_id(stream), int(index), *[int(e) for e in extra]])


def parallel_map(
    func: Callable,
    items: Sequence,
    workers: int,
    desc: str,
    initializer: Callable | None = None,
    initargs: Iterable = (),
) -> list:
    """``[func(item) for item in items]`` over ``workers`` processes (in-process when workers <= 1)."""
    items = list(items)
    workers = max(1, min(int(workers), len(items)))
    bar = dict(total=len(items), desc=desc, unit="item", mininterval=1.0, leave=False)
    if workers == 1:
        if initializer is not None:
            initializer(*initargs)
        return [func(item) for item in tqdm(items, **bar)]
    # "spawn": a fresh interpreter per worker, safe whatever threads (cv2, torch) the parent has started.
    context = multiprocessing.get_context("spawn")
    chunk = max(1, len(items) // (workers * 8))
    with context.Pool(workers, initializer=_worker_init, initargs=(initializer, tuple(initargs))) as pool:
        return list(tqdm(pool.imap(func, items, chunksize=chunk), **bar))


def _worker_init(initializer: Callable | None, initargs: tuple) -> None:
    cv2.setNumThreads(1)  # one process per core already
    if initializer is not None:
        initializer(*initargs)
