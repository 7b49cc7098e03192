"""A random method's draws, split into row blocks without changing them.

A random method (DARE, DELLA) takes T x numel U[0, 1) draws per tensor from the tensor's own generator,
task 0's entries in row-major order, then task 1's (`TensorContext.uniform`). torch's CPU generator
(mt19937) hands out one 32-bit word per float32 draw, so drawing a task in consecutive pieces gives
the same numbers as drawing it whole. What a row block of task t needs is the generator's state at
that block's first entry; mt19937 cannot jump ahead, so `block_states` draws the tensor once, throwing
the numbers away a block at a time, and keeps each block's starting state (5 KB each).
"""

from __future__ import annotations

import torch

Blocks = list[tuple[int, int]]


def block_states(generator: torch.Generator, n_tasks: int, row_numel: int, blocks: Blocks) -> list[list[torch.Tensor]]:
    """states[t][b]: the generator's state where task t's draws for rows blocks[b] begin."""
    scratch = torch.empty(max(stop - start for start, stop in blocks) * row_numel)
    states: list[list[torch.Tensor]] = []
    for t in range(n_tasks):
        states.append([])
        for b, (start, stop) in enumerate(blocks):
            states[t].append(generator.get_state())
            if t < n_tasks - 1 or b < len(blocks) - 1:  # the last block's draws are never needed here
                torch.rand((stop - start) * row_numel, generator=generator, out=scratch[: (stop - start) * row_numel])
    return states


def block_draws(states: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """[T, *shape] draws of one row block, task t's from its saved state `states[t]`."""
    draws = torch.empty((len(states), *shape))
    generator = torch.Generator(device="cpu")
    for t, state in enumerate(states):
        generator.set_state(state)
        torch.rand(shape, generator=generator, out=draws[t])
    return draws
