"""``--data KIND:DIR`` specs -> one pair source, and the epoch order of its pairs.

docs/protocols.md section 1: the paper trains on 200k pairs, COCO 2014 (the first 100k images) and
YouTube-VIS, one epoch. ``--pairs N`` splits N evenly between the sources: COCO takes its
first N/k images, YouTube-VIS cycles over its objects until it has N/k pairs. The epoch order
is a permutation seeded by the run seed; process r of w takes every w-th pair from r on, so
the order does not depend on the number of workers and a resumed run sees the same pairs.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from bench import BenchError
from methods.training.pairs import ConcatPairs, PairSource, SyntheticPairs

log = logging.getLogger(__name__)

KINDS = ("coco", "ytvis", "synthetic")


def parse_data_spec(spec: str) -> tuple[str, str]:
    kind, sep, where = spec.partition(":")
    if not sep or kind not in KINDS or not where:
        raise BenchError(f"--data {spec!r}: expected KIND:DIR with KIND one of {', '.join(KINDS)} "
                         f"(e.g. coco:/data/coco2014, ytvis:/data/youtube-vis, synthetic:64)")
    return kind, where


def build_source(specs: Sequence[str], resolution: int, pairs: int | None = None,
                 recipe: str = "release") -> PairSource:
    """One source over every ``--data`` spec; ``pairs`` split evenly between them."""
    if not specs:
        raise BenchError("no training data: pass --data coco:DIR and/or --data ytvis:DIR, or --preset smoke")
    share = None if pairs is None else max(1, int(pairs) // len(specs))
    sources: list[PairSource] = []
    for spec in specs:
        kind, where = parse_data_spec(spec)
        if kind == "coco":
            from methods.training.coco import CocoPairs
            source = CocoPairs(where, resolution, limit=share, recipe=recipe)
            if share is not None and len(source) < share:
                log.warning("COCO under %s has %d usable images, fewer than the %d asked", where, len(source), share)
        elif kind == "ytvis":
            from methods.training.ytvis import YouTubeVISPairs
            source = YouTubeVISPairs(where, resolution, length=share, recipe=recipe)
        else:
            try:
                n = int(where)
            except ValueError:
                raise BenchError(f"--data {spec!r}: synthetic takes a pair count (synthetic:64)") from None
            source = SyntheticPairs(share or n, resolution)
        if len(source) == 0:
            raise BenchError(f"--data {spec!r}: no usable pairs found")
        sources.append(source)
    return sources[0] if len(sources) == 1 else ConcatPairs(sources)


def epoch_order(n: int, seed: int, epoch: int = 0, rank: int = 0, world: int = 1) -> list[int]:
    """The pairs process ``rank`` of ``world`` visits in one epoch, in order."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=g).tolist()
    return order[rank::world]
