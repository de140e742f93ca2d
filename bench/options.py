"""Helpers below both the runner and scoring: option parsing and device choice.

They live here, not in :mod:`bench.runner`, so that scoring and data commands can use them
without importing the runner (and the runner can import scoring without a circle).
"""

from __future__ import annotations

from bench import BenchError


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-5' -> (0..5); '0,2,4' -> (0, 2, 4); '3' -> (3,)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                seeds.extend(range(int(lo), int(hi) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected a range like 0-5 or a list like 0,2,4") from None
    if not seeds:
        raise BenchError(f"--seeds {text!r} names no seed")
    return tuple(sorted(set(seeds)))


def parse_params(items: list[str], option: str = "--param") -> dict:
    """KEY=VALUE pairs of a repeatable option; values parsed as int, float, bool or left as strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BenchError(f"{option} {item!r}: expected KEY=VALUE")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False, "none": None}.get(value.lower(), value)
    return out


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"
