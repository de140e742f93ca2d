"""The arena's matches: which images meet, and asking the judge about each pair in both orders.

Two runs meet on every key both hold (the same subject, prompt, seed and image index of one suite).
Each meeting is asked once per question (CP, PF) and per order: order 0 shows run i's image as A,
order 1 shows run j's image as A. Every answer is appended to ``arena_answers.jsonl`` (fsynced as
it arrives) under a request id that hashes the judge's settings, the question, both images' sha256
and the attempt, so a stopped arena resumes without asking again (bench.metrics.judge_log).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from bench.arena.ask import ASK_VERSION, conversation, parse_verdict
from bench.limits import ARENA_MAX_QUESTIONS, ARENA_MAX_RUNS


@dataclass
class Entrant:
    label: str                 # the run's label, as `bench report` shows it
    run_dir: Path
    items: dict                # key -> (ScoreItem, Sample, image sha256)


@dataclass(frozen=True)
class Question:
    i: int                     # entrant indexes, i < j
    j: int
    key: str
    kind: str                  # "cp" or "pf"
    order: int                 # 0: run i's image is A; 1: run j's image is A


def load_entrants(run_dirs) -> tuple[str, list[Entrant]]:
    """(suite name, entrants) of the given run directories; runs of different suites are refused."""
    from bench.options import unique_paths
    from bench.report.load import load_runs
    from bench.scoring import build_items, load_run_samples
    from bench.store import RunStore

    paths = unique_paths(run_dirs, "bench arena")
    if len(paths) < 2:
        raise BenchError("bench arena compares at least two runs: give RUN_A RUN_B [RUN_C ...]")
    if len(paths) > ARENA_MAX_RUNS:
        raise BenchError(f"bench arena: {len(paths)} runs, more than {ARENA_MAX_RUNS} (bench.limits.ARENA_MAX_RUNS; "
                         "every two runs are a pair)")
    runs = load_runs(paths)
    suites = sorted(set(runs["suite"]))
    if len(suites) > 1:
        raise BenchError(f"bench arena: the runs hold different suites ({', '.join(suites)}); compare runs of one suite")
    entrants = []
    for info in runs.itertuples(index=False):
        store = RunStore.open_existing(info.run_dir)
        _, cells = load_run_samples(store.read_run(), store.run_json)
        items = {item.key: (item, sample, sha) for item, sample, sha in build_items(store, cells)}
        entrants.append(Entrant(info.run, Path(info.run_dir), items))
    return suites[0], entrants


def questions(entrants: list[Entrant], kinds: tuple[str, ...]) -> list[Question]:
    """Every question of every pair of runs on the keys both hold, ordered by key (one subject's
    images are loaded together)."""
    out = []
    for i in range(len(entrants)):
        for j in range(i + 1, len(entrants)):
            shared = sorted(set(entrants[i].items) & set(entrants[j].items))
            out += [Question(i, j, key, kind, order) for key in shared for kind in kinds for order in (0, 1)]
    if not out:
        raise BenchError("bench arena: no two runs share an image key (subject, prompt, seed, image index); "
                         "compare runs of the same suite, subjects and seeds")
    if len(out) > ARENA_MAX_QUESTIONS:
        raise BenchError(f"bench arena: {len(out)} questions, more than {ARENA_MAX_QUESTIONS} "
                         "(bench.limits.ARENA_MAX_QUESTIONS): fewer runs, or runs with fewer images")
    return sorted(out, key=lambda q: (q.key, q.i, q.j, q.kind, q.order))


class Arena:
    """Asks a judge backend the pairwise questions, reusing answers already in the log."""

    def __init__(self, backend, judge_name: str, settings: dict, temperature: float, attempts: int, log,
                 chunk: int = 32):
        self.backend, self.judge_name, self.log = backend, judge_name, log
        self.temperature, self.attempts, self.chunk = temperature, attempts, chunk
        self.settings = {**settings, "ask": ASK_VERSION}
        self.version = "1-" + hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        self.asked = self.reused = 0
        self._images: OrderedDict[str, object] = OrderedDict()

    def _image(self, path):
        from bench.metrics.judge import judge_image

        key = str(path)
        if key not in self._images:
            self._images[key] = judge_image(path)
            while len(self._images) > 64:
                self._images.popitem(last=False)
        return self._images[key]

    def _sides(self, entrants, q: Question):
        first, second = (q.i, q.j) if q.order == 0 else (q.j, q.i)
        return entrants[first].items[q.key], entrants[second].items[q.key]

    def request(self, entrants, q: Question, attempt: int) -> str:
        from bench.metrics.judge_log import request_id

        (a, sample, sha_a), (_, _, sha_b) = self._sides(entrants, q)
        context = (str(a.subject_images[:1]), a.category) if q.kind == "cp" else (a.eval_text,)
        return request_id(self.version, q.kind, q.key, sha_a, sha_b, *context, attempt)

    def _conversation(self, entrants, q: Question) -> list[dict]:
        (a, _, _), (b, _, _) = self._sides(entrants, q)
        reference = self._image(a.subject_images[0]) if q.kind == "cp" and a.subject_images else None
        if q.kind == "cp" and reference is None:
            raise BenchError(f"{q.key}: no reference image for the arena's CP question")
        return conversation(q.kind, a.category, a.eval_text, reference, self._image(a.image), self._image(b.image))

    def run(self, entrants: list[Entrant], asked: list[Question], progress: bool = True) -> dict[Question, tuple]:
        """{question: (verdict or None, failure or None)} for every question."""
        from tqdm import tqdm

        from bench.metrics.judge import item_seed

        verdicts: dict[Question, tuple] = {}
        pending = list(asked)
        with tqdm(total=len(asked), desc=f"arena ({self.judge_name})", unit="q", disable=not progress,
                  file=sys.stderr) as bar:
            for attempt in range(self.attempts):
                retry = []
                todo = []
                for q in pending:
                    record = self.log.get(self.request(entrants, q, attempt))
                    if record is None:
                        todo.append(q)
                        continue
                    self.reused += 1
                    verdict = record.get("verdict") if record.get("verdict") in ("A", "B", "tie") else None
                    verdicts[q] = (verdict, None if verdict else record.get("failure") or "failed")
                    if verdict is None:
                        retry.append(q)
                    else:
                        bar.update(1)
                for start in range(0, len(todo), self.chunk):
                    part = todo[start:start + self.chunk]
                    seeds = [item_seed(q.key, f"arena-{q.kind}-{q.i}-{q.j}-{q.order}", 0, attempt) for q in part]

                    def arrived(n: int, answer, part=part, seeds=seeds) -> None:
                        q = part[n]
                        verdict, why = (None, answer.failure) if answer.failure else parse_verdict(answer.text,
                                                                                                  answer.refused)
                        self.log.append({"key": q.key, "kind": q.kind, "runs": [entrants[q.i].label, entrants[q.j].label],
                                         "order": q.order, "attempt": attempt, "answer": answer.text[:20_000],
                                         "verdict": verdict, "failure": why, "finish_reason": answer.finish_reason,
                                         "seed": seeds[n] if self.temperature > 0 else None,
                                         "request": self.request(entrants, q, attempt), "version": self.version})
                        verdicts[q] = (verdict, why)
                        self.asked += 1
                        if verdict is None:
                            retry.append(q)
                        else:
                            bar.update(1)
                    self.backend.answer([self._conversation(entrants, q) for q in part], seeds, self.temperature,
                                        on_answer=arrived)
                pending = retry
            bar.update(len(pending))
        return verdicts
