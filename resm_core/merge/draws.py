"""A random method's draws (DARE, DELLA), from a counter-based generator: any rows of a tensor's draws are
computed directly, in any order and on any thread, and equal the same rows of the whole tensor's draws.

Task t's draws for tensor `name` are the float32 stream of numpy's Philox4x64-10 keyed by SHA-256 of
(run seed, name, t), in row-major order of the tensor's entries. Draw i comes from counter step
i // 8 (a step gives four 64-bit words, two 32-bit draws each), so a slice starting at i sets the counter
and throws away at most 7 draws. numpy makes a draw (32-bit word >> 8) / 2**24: a multiple of 2**-24
in [0, 1), so `u < p` keeps an entry with probability p to within 2**-24.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

DRAWS_PER_STEP = 8


def stream_key(seed: int, name: str, task: int) -> np.ndarray:
    """The Philox key (two 64-bit words) of task `task`'s draws for tensor `name`."""
    digest = hashlib.sha256(f"{seed}:{name}:{task}".encode()).digest()
    return np.frombuffer(digest[:16], dtype="<u8").copy()


def draws_into(out: np.ndarray, seed: int, name: str, task: int, start: int) -> None:
    """Draws start:start + out.size of task `task`'s stream for `name` into the float32 vector `out`."""
    step, skip = divmod(start, DRAWS_PER_STEP)
    generator = np.random.Generator(np.random.Philox(key=stream_key(seed, name, task), counter=step))
    if skip:
        generator.random(skip, dtype=np.float32)
    generator.random(out=out, dtype=np.float32)


def uniform(seed: int, name: str, n_tasks: int, shape: tuple[int, ...], first_row: int = 0) -> torch.Tensor:
    """[n_tasks, *shape] U[0, 1) draws of the rows first_row:first_row + shape[0] of tensor `name` (a 1-D
    tensor, or a whole one: first_row 0). The tasks are drawn on parallel threads (numpy releases the GIL)."""
    draws = torch.empty((n_tasks, *shape))
    flat = draws.numpy().reshape(n_tasks, -1)
    start = first_row * math.prod(shape[1:])

    def draw(task: int) -> None:
        draws_into(flat[task], seed, name, task, start)

    if n_tasks == 1 or flat.shape[1] < 1 << 16:
        for task in range(n_tasks):
            draw(task)
    else:
        with ThreadPoolExecutor(max_workers=min(n_tasks, 4)) as pool:
            list(pool.map(draw, range(n_tasks)))
    return draws
