"""Resident memory of a set of processes, sampled in the background (benchmarks and
fault tests report peaks)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psutil


class MemorySampler:
    """Peak RSS per process (by Ray's process title or executable name) and of all of
    them together, sampled every ``interval_s`` over the given processes and their children."""

    def __init__(self, roots: Callable[[], list[int]], interval_s: float = 2.0) -> None:
        self.roots = roots
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.baseline_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        procs: dict[int, psutil.Process] = {}
        for pid in self.roots():
            try:
                p = psutil.Process(pid)
                procs[pid] = p
                procs.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.Error:
                continue
        total = 0
        for p in procs.values():
            try:
                rss, name = p.memory_info().rss, _title(p)
            except psutil.Error:
                continue
            total += rss
            self.peak[name] = max(self.peak.get(name, 0), rss)
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self.baseline_total = self.peak_total
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _title(p: psutil.Process) -> str:
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):  # Ray titles its workers ray::<actor>[.<running method>]
        title = cmd[0].split()[0]
        head, _, method = title.rpartition(".")
        title = head if head and method.isidentifier() else title
        # A starting replica is titled ray::<actor name>:<class>: keep the class part.
        if "ServeReplica:" in title:
            return "ray::" + title[title.index("ServeReplica:"):]
        return "ray::" + title.rsplit(":", 1)[-1] if title.count(":") > 2 else title
    return p.name()
