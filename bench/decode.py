"""``python -m bench.decode``: the envelope decoder alone, on realistic records.

Builds the records of the four load streams (``readside.load``: threads with payments,
requests, providers, workflows), encodes them with orjson as the producers do, and times
``readside.schemas.decode`` over all of them in rounds (CPU time; the best round counts), next to the
pydantic reference decoder (``readside.schemas.envelope.reference_decode``) on the same records.
``--profile`` prints a cProfile view of the fast decoder (``--profile reference`` of the other).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable

import orjson

from readside.load import provider_stream, request_stream, thread_stream, workflow_stream
from readside.schemas import decode
from readside.schemas.envelope import reference_decode

Records = list[tuple[str, bytes, bytes]]


def records(scale: int, seed: int = 0) -> dict[str, Records]:
    """The encoded records of each stream, ``scale`` aggregates each (workflows: a fifth)."""
    streams = {
        "threads": thread_stream(threads=scale, seed=seed),
        "requests": request_stream(requests=scale, seed=seed),
        "providers": provider_stream(providers=scale, seed=seed),
        "workflows": workflow_stream(workflows=max(1, scale // 5), seed=seed),
    }
    return {
        name: [(r.topic, r.key.encode(), orjson.dumps(r.value)) for r in stream]
        for name, stream in streams.items()
    }


def rates(fns: list[Callable[[str, bytes, bytes], object]], recs: Records, rounds: int) -> list[float]:
    """Events per CPU second of each of ``fns`` (best round); the rounds alternate between them
    so that other load on the machine weighs on all alike."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.process_time()
            for topic, key, value in recs:
                fn(topic, key, value)
            best[i] = min(best[i], time.process_time() - start)
    return [len(recs) / b for b in best]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=400, help="aggregates per stream (default 400)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", nargs="?", const="fast", choices=["fast", "reference"])
    args = p.parse_args()
    streams = records(args.scale)
    streams["all"] = [r for recs in streams.values() for r in recs]
    if args.profile:
        fn = decode if args.profile == "fast" else reference_decode
        prof = cProfile.Profile()
        prof.enable()
        for topic, key, value in streams["all"]:
            fn(topic, key, value)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    print(f"{'stream':<10} {'records':>8} {'KB/rec':>7} {'reference ev/s':>15} {'decode ev/s':>12} {'ratio':>6}")
    for name, recs in streams.items():
        size = sum(len(v) for _, _, v in recs) / len(recs) / 1024
        ref, new = rates([reference_decode, decode], recs, args.rounds)
        print(f"{name:<10} {len(recs):>8} {size:>7.2f} {ref:>15,.0f} {new:>12,.0f} {new / ref:>6.2f}")


if __name__ == "__main__":
    main()
