"""Paired step timing: the studio's own `Loop` runs, and after each of its optimizer steps (or each
block of steps, on a GPU) one contender runs the same number of steps, so the studio and the
contender take turns: studio, bare, studio, bare, ... Each studio sample is paired with the
contender sample taken right after it.

Why strict alternation: on a shared machine the load drifts over seconds (pairing cancels it), and
a step runs slower after a different model's step than after its own (caches, allocator): with two
parties taking turns, each always follows the other, so neither is favoured. With several
contenders the run is split into phases, one contender per phase (the floor first, longest).

Per sample: wall time (`perf_counter`, what a user waits for) and this thread's CPU time
(`thread_time`, insensitive to other processes; torch runs single-threaded here, see cpu.py).
"""
from __future__ import annotations

import logging
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from studio.train.loop import Loop
from studio.train.trackers import finish_trackers, tensorboard_dir


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)  # seconds per optimizer step
    cpu: list[float] = field(default_factory=list)

    def add(self, wall: float, cpu: float, steps: int) -> None:
        self.wall.append(wall / steps)
        self.cpu.append(cpu / steps)


@dataclass
class Phase:
    contender: str
    share: float  # of the blocks and of the time budget
    studio: Samples = field(default_factory=Samples)  # studio samples paired with this contender's
    other: Samples = field(default_factory=Samples)


class PairedLoop(Loop):
    """`Loop` unchanged; `after_step` also runs the current phase's contender, outside the studio's
    timed segment. The studio's segment runs from the end of the previous contender block to the end
    of its own `after_step`: data loading, forward, backward, clipping, optimizer, scheduler,
    logging, control files, everything the studio does per step.
    """

    def __init__(self, *args, contenders: dict[str, Callable[[], object]], phases: list[Phase], warmup: int,
                 max_blocks: int, budget_s: float, min_blocks: int = 10, block: int = 1,
                 sync: Callable[[], None] = lambda: None, **kwargs):
        super().__init__(*args, **kwargs)
        self.contenders, self.phases, self.warmup, self.block, self.sync = contenders, phases, warmup, block, sync
        self.max_blocks, self.budget_s, self.min_blocks = max_blocks, budget_s, min_blocks
        self.current = 0
        self.phase_started = time.perf_counter()
        self.mark: tuple[float, float] | None = None
        self.fresh_phase = True  # the first studio segment of a phase follows the previous contender
        self.stopped_by_time = False

    def after_step(self, grad_norm):
        outcome = super().after_step(grad_norm)
        if self.step % self.block:
            return outcome
        self.sync()
        wall, cpu = time.perf_counter(), time.thread_time()
        phase = self.phases[self.current]
        counted = self.step > self.warmup and self.mark is not None and not self.fresh_phase
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(self.block):
            self.contenders[phase.contender]()
        self.sync()
        if counted:
            phase.studio.add(wall - self.mark[0], cpu - self.mark[1], self.block)
            phase.other.add(time.perf_counter() - w0, time.thread_time() - c0, self.block)
        self.fresh_phase = False
        self.mark = (time.perf_counter(), time.thread_time())
        if outcome:
            return outcome
        return self._next_phase_or_stop(phase)

    def _next_phase_or_stop(self, phase: Phase) -> str | None:
        pairs = len(phase.other.wall)
        spent = time.perf_counter() - self.phase_started
        planned = phase.share * self.max_blocks
        if pairs < self.min_blocks or (pairs < planned and spent < phase.share * self.budget_s):
            return None
        self.stopped_by_time |= pairs < planned
        self.current += 1
        self.phase_started, self.fresh_phase = time.perf_counter(), True
        return "stopped" if self.current >= len(self.phases) else None


def _ms(values: list[float]) -> list[float]:
    return [round(v * 1e3, 3) for v in values]


def median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1e3, 3) if values else None


def bootstrap_ci(ratios: list[float], rounds: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the median paired ratio, by resampling the pairs."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(rounds))
    return round(meds[int(0.025 * rounds)], 4), round(meds[int(0.975 * rounds) - 1], 4)


def compare(studio: Samples, other: Samples) -> dict:
    """Studio / other: median of the per-pair ratios (drift cancels within a pair), its 95 % interval,
    the same on each half of the run (a stable machine gives close halves), and the CPU-time ratio."""
    wall = [s / o for s, o in zip(studio.wall, other.wall) if o > 0]
    cpu = [s / o for s, o in zip(studio.cpu, other.cpu) if o > 0]
    half = len(wall) // 2
    out = {"pairs": len(wall), "ratio": round(statistics.median(wall), 4) if wall else None,
           "ratio_of_medians": round(statistics.median(studio.wall) / statistics.median(other.wall), 4)
           if wall else None}
    if len(wall) >= 4:
        out["ratio_ci95"] = list(bootstrap_ci(wall))
        out["ratio_halves"] = [round(statistics.median(wall[:half]), 4), round(statistics.median(wall[half:]), 4)]
    if cpu and all(c > 0 for c in other.cpu):
        out["cpu_ratio"] = round(statistics.median(cpu), 4)
    return out


def summarize(samples: Samples) -> dict:
    ordered = sorted(samples.wall)
    return {"steps": len(ordered), "median_ms": median_ms(samples.wall), "median_cpu_ms": median_ms(samples.cpu),
            "p10_ms": round(ordered[len(ordered) // 10] * 1e3, 3) if ordered else None,
            "p90_ms": round(ordered[(len(ordered) * 9) // 10] * 1e3, 3) if ordered else None}


def run_paired(trainer, run_dir: Path, contenders: dict[str, Callable[[], object]], shares: dict[str, float],
               warmup: int, max_blocks: int, budget_s: float, min_blocks: int, block: int = 1,
               sync: Callable[[], None] = lambda: None) -> dict:
    """Train the studio's loop until every phase has its pairs (or its share of the time budget).
    The loop must be allowed enough steps: `trainer.total_steps` >= warmup + blocks * block + phases."""
    from studio.runfolder.progress import ProgressLog

    for step in contenders.values():  # first calls allocate and initialise lazily: not part of a step
        for _ in range(warmup):
            step()
    sync()
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = ProgressLog(run_dir, total_steps=trainer.total_steps)
    if "tensorboard" in trainer.cfg.logging.report_to:  # as `studio train` does: part of logging steps
        from accelerate.tracking import TensorBoardTracker

        tracker = TensorBoardTracker("", str(tensorboard_dir(trainer.cfg, run_dir)))
        tracker.start()
        trainer.accelerator.trackers.append(tracker)
    # The studio logs each logging step at INFO, into console.log in a real run: keep that cost in.
    console = logging.FileHandler(run_dir / "console.log", encoding="utf-8")
    studio_log = logging.getLogger("studio")
    studio_log.addHandler(console)
    studio_log.setLevel(logging.INFO)
    phases = [Phase(name, share) for name, share in shares.items()]
    loop = PairedLoop(trainer, run_dir, progress, contenders=contenders, phases=phases, warmup=warmup,
                      max_blocks=max_blocks, budget_s=budget_s, min_blocks=min_blocks, block=block, sync=sync)
    started = time.perf_counter()
    try:
        loop.run()
    finally:
        progress.close()
        studio_log.removeHandler(console)
        console.close()
        finish_trackers(trainer.accelerator)
    studio_all = Samples([w for p in phases for w in p.studio.wall], [c for p in phases for c in p.studio.cpu])
    per_step = {"studio": summarize(studio_all), **{p.contender: summarize(p.other) for p in phases}}
    return {"seconds": round(time.perf_counter() - started, 1), "studio_steps": loop.step, "block": block,
            "warmup_steps": warmup, "cut_by_time_budget": loop.stopped_by_time, "per_step": per_step,
            "ratios": {p.contender: compare(p.studio, p.other) for p in phases},
            "samples_ms": {p.contender: {"studio_wall": _ms(p.studio.wall), "studio_cpu": _ms(p.studio.cpu),
                                         "wall": _ms(p.other.wall), "cpu": _ms(p.other.cpu)} for p in phases},
            "studio_paired_ms": {p.contender: median_ms(p.studio.wall) for p in phases}}
