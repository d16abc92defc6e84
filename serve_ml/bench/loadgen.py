"""Load generation in its own process: wrk when installed, else our aiohttp client.

Bodies are stored length-prefixed (``<bytes>\n<body>``, so binary bodies work too);
each request takes the next one. Both generators report requests/s, p50/p99 latency
and error counts as one JSON object.

    python -m serve_ml.bench.loadgen URL BODIES_FILE CONCURRENCY DURATION_S [CONTENT_TYPE [HEADERS_JSON]]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_LUA = r"""
local bodies = {}
local f = io.open(os.getenv("SERVE_ML_BODIES"), "rb")
local data = f:read("*a")
f:close()
local pos = 1
while pos <= #data do
  local nl = string.find(data, "\n", pos, true)
  local len = tonumber(string.sub(data, pos, nl - 1))
  bodies[#bodies + 1] = string.sub(data, nl + 1, nl + len)
  pos = nl + len + 1
end
local i = math.random(#bodies)
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("SERVE_ML_CONTENT_TYPE")
for k, v in string.gmatch(os.getenv("SERVE_ML_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[k] = v
end
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "error_kinds": {"status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status + e.connect + e.read + e.write + e.timeout, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    tool: str
    error_kinds: dict[str, int] | None = None  # wrk: status (non-2xx/3xx), connect, read, write, timeout


def write_bodies(bodies: list[bytes]) -> Path:
    f = tempfile.NamedTemporaryFile("wb", suffix=".bodies", delete=False)
    for b in bodies:
        f.write(b"%d\n%s" % (len(b), b))
    f.close()
    return Path(f.name)


def read_bodies(path: Path) -> list[bytes]:
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        nl = data.index(b"\n", pos)
        size = int(data[pos:nl])
        out.append(data[nl + 1:nl + 1 + size])
        pos = nl + 1 + size
    return out


def wrk_path() -> str | None:
    """wrk, unless ``SERVE_ML_LOADGEN=python`` forces the project's own client."""
    return shutil.which("wrk") if os.environ.get("SERVE_ML_LOADGEN", "wrk") == "wrk" else None


def run_load(url: str, bodies_file: Path, concurrency: int, duration_s: float,
             content_type: str = "application/json", headers: Mapping[str, str] | None = None) -> LoadResult:
    """Load ``url`` with the bodies in turn; ``headers`` go on every request."""
    wrk = wrk_path()
    extra = dict(headers or {})
    if wrk:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(_LUA)
        threads = max(1, min(2, concurrency))
        out = subprocess.run(
            [wrk, "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration_s))}s", "--timeout", "10s",
             "-s", lua.name, url], capture_output=True, text=True, timeout=duration_s + 60,
            env={"SERVE_ML_BODIES": str(bodies_file), "SERVE_ML_CONTENT_TYPE": content_type, "PATH": "/usr/bin:/bin",
                 "SERVE_ML_HEADERS": "\n".join(f"{k}: {v}" for k, v in extra.items())})
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        r = json.loads(line[7:])
        return LoadResult(r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1e3, r["p99_us"] / 1e3,
                          r["errors"], r["requests"], "wrk", r["error_kinds"])
    out = subprocess.run([sys.executable, "-m", "serve_ml.bench.loadgen", url, str(bodies_file), str(concurrency),
                          str(duration_s), content_type, json.dumps(extra)], capture_output=True, text=True,
                         timeout=duration_s + 60)
    return LoadResult(**json.loads(out.stdout.strip().splitlines()[-1]))


async def _client(url: str, bodies: list[bytes], concurrency: int, duration_s: float, content_type: str,
                  headers: Mapping[str, str]) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def worker(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop_at:
            i = (i + 1) % len(bodies)
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=bodies[i], headers={**headers, "content-type": content_type}) as r:
                    await r.read()
                    if r.status >= 400:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(k, session) for k in range(concurrency)))
    el = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
    return {"rps": len(lat) / el, "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "errors": errors,
            "requests": len(lat), "tool": "serve-ml aiohttp client"}


if __name__ == "__main__":
    url, path, conc, dur = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    ctype = sys.argv[5] if len(sys.argv) > 5 else "application/json"
    hdrs = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    print(json.dumps(asyncio.run(_client(url, read_bodies(path), conc, dur, ctype, hdrs))))
