"""Training data order as a pure function of ``(seed, iteration)``.

The batch of iteration ``i`` holds the samples ``i*B .. i*B+B-1`` of a stream of per-epoch
permutations drawn from ``(seed, epoch)``; each key also carries the sample's draw number, from
which its augmentation is drawn. A resumed run therefore sees exactly the batches an
uninterrupted run sees.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def batch_keys(n: int, batch: int, seed: int, iteration: int) -> list[tuple[int, int]]:
    """``(index, draw)`` keys of the batch at ``iteration`` (0-based); deterministic."""
    keys = []
    for draw in range(iteration * batch, (iteration + 1) * batch):
        epoch, pos = divmod(draw, n)
        perm = _permutation(n, seed, epoch)
        keys.append((int(perm[pos]), draw))
    return keys


_perm_cache: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        if len(_perm_cache) > 8:
            _perm_cache.clear()
        _perm_cache[key] = np.random.default_rng((seed, epoch, 0xDA7A)).permutation(n)
    return _perm_cache[key]


class IterationSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler yielding the keys of iterations ``start .. stop-1``."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            yield batch_keys(self.n, self.batch, self.seed, it)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
