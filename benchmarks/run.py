"""Startup-latency benchmark: storage-init against its peers on the same machine.

    .venv/bin/python -m benchmarks.run [--runs 5] [--shard-mib 1024] [--quick]

Then, unless ``--backends ""``, it runs `benchmarks.backends`: one 2 GiB file from
the GCS, Azure, http(s) and S3 servers against curl, kserve-storage and the Azure SDK.

Starts SeaweedFS on 127.0.0.1 and seeds two workloads - an LLM-like model (two
shards plus small files) and 1000 files of 100 KiB - each twice: as s5cmd uploads
them (MD5 ETags) and as current AWS SDKs upload them (full-object CRC64NVME). The
small files are also fetched "away": through `benchmarks.delayproxy`, which
delivers every response 30 ms late (``--away-ms``), as a store across a network
would; on loopback a GET costs no round trip, so how many a tool keeps in flight
would not show otherwise. Then
it runs every tool on every seeded workload in a shuffled order, a new one per
round and workload (each workload read once first in every round, untimed and
written nowhere), flushing dirty pages before each run, checks each output is
byte-identical to the source, and writes
``benchmarks/results/latest.{json,md}``. Wall time is process start to exit;
CPU is user+system of the tool's whole process tree; RSS is the peak of that tree.
The Python tools run as they ship, on the images' interpreter (`benchmarks.installs`).
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

from benchmarks.installs import (
    ROOT,
    WORK,
    image_python,
    peer_python,
    storage_init_argv,
    storage_init_commit,
)
from benchmarks.measure import Measured, fresh_dest, run_measured
from benchmarks.seed import (
    make_big_file,
    make_model,
    make_small_files,
    s5cmd_argv,
    s5cmd_binary,
    seed_s5cmd,
    seed_sdk,
)
from storage_init.manifest import MANIFEST_NAME

BIN = Path(sys.executable).parent
RESULTS = ROOT / "benchmarks" / "results"

Command = Callable[[str, Path, Mapping[str, str]], list[str]]
Seeder = Callable[[Path, str, Mapping[str, str]], None]


def _plot_python() -> str:
    return peer_python("plot")


def _ensure_rclone() -> bool:
    """Install Debian's rclone if it is missing (as root); whether it is there."""
    if shutil.which("rclone"):
        return True
    if os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rclone"], env=env, check=False
        )
    return shutil.which("rclone") is not None


def storage_init_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    """storage-init as the image runs it (`installs.storage_init_argv`)."""
    del env
    return [*storage_init_argv(), "--quiet", url, str(dest)]


def storage_init_tree_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    """The checkout itself, on the interpreter running the harness.

    For A/B runs by hand (`benchmarks.alternate`): unlike the installed copy it
    honours ``PYTHONPATH``, e.g. ``storage-init-tree:PYTHONPATH=OLD_CHECKOUT``.
    """
    del env
    _compile_tree()
    return [str(BIN / "storage-init"), "--quiet", url, str(dest)]


@functools.cache
def _compile_tree() -> None:
    """Bytecode for the checkout, as an install has it, once per process.

    The checkout is an editable install, and with PYTHONDONTWRITEBYTECODE set
    every start would compile ours again (30-50 ms).
    """
    compileall.compile_dir(ROOT / "storage_init", quiet=1)


def s5cmd_copy(source: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    """``s5cmd cp SOURCE DEST/`` against the benchmark's S3 endpoint."""
    return [*s5cmd_argv(env), "cp", source, f"{dest}/"]


def s5cmd_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    return s5cmd_copy(url.rstrip("/") + "/*", dest, env)


def s5cmd_tuned_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    """s5cmd's documented knobs for large files: more parts at once, per file."""
    argv = s5cmd_cmd(url, dest, env)
    at = argv.index("cp") + 1
    return [*argv[:at], "--concurrency", "16", "--part-size", "32", *argv[at:]]


def warm_up(url: str, env: Mapping[str, str]) -> int:
    """Read every object under `url` once, untimed, writing it nowhere.

    SeaweedFS's volume files (tens of GB in a full run) outgrow the page cache,
    and the previous workload's evicted this one's: without a read first, the
    first tool of each round paid for reading it from disk. The bytes are only
    counted (``s5cmd run`` of one ``cat`` per object, into a pipe): the warm-up
    once copied them to the destination and deleted the copy, which left freed
    and written pages in the kernel to whichever tool ran next, always the
    round's first.

    Returns:
        The bytes read.

    Raises:
        subprocess.CalledProcessError: s5cmd failed (e.g. nothing under `url`);
            its stderr is attached and printed.
    """
    s5cmd = s5cmd_argv(env)
    listing = subprocess.run(
        [*s5cmd, "--json", "ls", url.rstrip("/") + "/*"],
        env=dict(env),
        capture_output=True,
        text=True,
    )
    if listing.returncode:
        _s5cmd_failed(listing.returncode, listing.args, listing.stderr)
    keys = [json.loads(line)["key"] for line in listing.stdout.splitlines() if line]
    total = 0
    with tempfile.TemporaryFile() as commands, tempfile.TemporaryFile() as errors:
        commands.write("".join(f"cat {key}\n" for key in keys).encode())
        commands.seek(0)
        with subprocess.Popen(
            [*s5cmd, "run"],
            env=dict(env),
            stdin=commands,
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as cat:
            out = cat.stdout
            assert out is not None
            while chunk := out.read(1 << 20):
                total += len(chunk)
        if cat.returncode:
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            _s5cmd_failed(cat.returncode, cat.args, text)
    return total


def _s5cmd_failed(code: int, argv: Any, stderr: str) -> NoReturn:
    """Print the end of s5cmd's `stderr`; raise CalledProcessError with it."""
    print(stderr[-2000:], file=sys.stderr)
    raise subprocess.CalledProcessError(code, argv, stderr=stderr)


def run_order(tools: list[str], rnd: int, workload: str) -> list[str]:
    """The order of `tools` in round `rnd` on `workload`: shuffled, reproducibly.

    A run can cost more after another tool's (its writes, the pages its
    deleted output freed); a fixed or reversed order put the same tool first, or
    after the same one, in every round. A seeded shuffle per round and workload
    spreads that over every tool alike, and a rerun repeats it.
    """
    return random.Random(f"{rnd}/{workload}").sample(tools, len(tools))


def kserve_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    del env
    script = str(ROOT / "benchmarks" / "kserve_download.py")
    return [peer_python("kserve"), script, url, str(dest)]


def boto3_cmd(mode: str) -> Command:
    # The CRT client comes with awscrt: a virtualenv of its own, so that the
    # classic runs are boto3 without it.
    venv = "boto3crt" if mode == "crt" else "boto3"

    def command(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
        del env
        script = str(ROOT / "benchmarks" / "boto3_download.py")
        return [peer_python(venv), script, url, str(dest), mode]

    return command


def rclone_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    # rclone 1.60 cannot use AWS_CA_BUNDLE with plain http: env -u drops it.
    remote = "weed:" + url.removeprefix("s3://")
    return [
        "env",
        "-u",
        "AWS_CA_BUNDLE",
        "RCLONE_CONFIG_WEED_TYPE=s3",
        "RCLONE_CONFIG_WEED_PROVIDER=SeaweedFS",
        f"RCLONE_CONFIG_WEED_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
        f"RCLONE_CONFIG_WEED_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
        f"RCLONE_CONFIG_WEED_ENDPOINT={env['AWS_ENDPOINT_URL']}",
        "RCLONE_CONFIG_WEED_REGION=us-east-1",
        "rclone",
        "--config",
        "/dev/null",
        "copy",
        remote,
        str(dest),
    ]


def rclone_tuned_cmd(url: str, dest: Path, env: Mapping[str, str]) -> list[str]:
    """rclone's documented knobs: more transfers and multi-thread streams."""
    return [
        *rclone_cmd(url, dest, env),
        "--transfers",
        "16",
        "--checkers",
        "16",
        "--multi-thread-streams",
        "8",
        "--multi-thread-cutoff",
        "64M",
    ]


#: Every tool with its default settings, and with its best documented tuning where
#: it has some: boto3 eight objects at once, s5cmd 16 parts per file, rclone 16
#: transfers and 8 streams per file. boto3 with awscrt installed runs s3transfer's
#: CRT transfer manager (see boto3_download.py for why it is built by hand).
TOOLS: dict[str, Command] = {
    "storage-init": storage_init_cmd,
    "storage-init-tree": storage_init_tree_cmd,
    "s5cmd": s5cmd_cmd,
    "kserve-storage": kserve_cmd,
    "boto3": boto3_cmd("default"),
    "boto3-8-threads": boto3_cmd("threads"),
    "boto3-crt": boto3_cmd("crt"),
    "rclone": rclone_cmd,
    "s5cmd-tuned": s5cmd_tuned_cmd,
    "rclone-tuned": rclone_tuned_cmd,
}


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
    #: CPU seconds SeaweedFS spent meanwhile (-1: not measured): on 2 cores, the
    #: server's CPU and the tool's share them, which bounds every tool's time.
    server_cpu: float = -1.0
    #: The tool that ran just before on the same workload ("warm-up": none did):
    #: what it left in the kernel (page cache, freed pages) can cost the next.
    after: str = ""


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _start_server(work: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "STATE_DIR": str(work / "seaweedfs"),
        "SERVERS_PY": sys.executable,
    }
    script = ROOT / "scripts" / "servers" / "s3_seaweedfs.sh"
    subprocess.run([str(script), "start"], env=env, check=True, capture_output=True)
    values = dict(
        item.split("=", 1)
        for item in (work / "seaweedfs" / "env").read_text().split()
        if "=" in item
    )
    return {**os.environ, **values}


def _stop_server(work: Path) -> None:
    env = {
        **os.environ,
        "STATE_DIR": str(work / "seaweedfs"),
        "SERVERS_PY": sys.executable,
    }
    script = ROOT / "scripts" / "servers" / "s3_seaweedfs.sh"
    subprocess.run([str(script), "stop"], env=env, check=False, capture_output=True)


def _start_delay(env: Mapping[str, str], ms: int) -> tuple[subprocess.Popen[str], str]:
    """Start `benchmarks.delayproxy` in front of the S3 endpoint in `env`.

    Returns the process and the endpoint URL to use instead.
    """
    upstream = env["AWS_ENDPOINT_URL"].removeprefix("http://").rstrip("/")
    proxy = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.delayproxy", upstream, str(ms / 1000)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proxy.stdout is not None
    port = int(proxy.stdout.readline())
    return proxy, f"http://127.0.0.1:{port}"


def _stop_delay(proxy: subprocess.Popen[str] | None) -> None:
    if proxy is not None:
        proxy.terminate()
        proxy.wait(timeout=10)


def _machine() -> dict[str, object]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    s5 = subprocess.run(
        [str(s5cmd_binary()), "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    si = subprocess.run(
        [*storage_init_argv(), "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024**3, 1),
        "cpu": cpu,
        "python": subprocess.run(
            [image_python(), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        + f" ({image_python()})",
        "kernel": platform.release(),
        "s5cmd": s5,
        "storage-init": si,
        # The code measured: the tables are read against commits.
        "commit": storage_init_commit(),
        "server": "SeaweedFS (weed mini) on 127.0.0.1, same machine",
    }


def _startup(work: Path, env: Mapping[str, str], runs: int) -> dict[str, list[float]]:
    """Start-up figures: ``--version``, and a 2-byte object by storage-init and s5cmd.

    storage-init's ``--debug`` log says when its first request left, counted from
    the process's start by the kernel (10 ms resolution).
    """
    import re

    tiny = work / "tiny"
    tiny.mkdir(exist_ok=True)
    (tiny / "config.json").write_text("{}")
    url = f"s3://{env['S3_BUCKET']}/startup/config.json"
    seed_sdk(tiny, url.rsplit("/", 1)[0], env)
    figures: dict[str, list[float]] = {
        "storage-init --version, wall ms": [],
        "storage-init 2-byte object, wall ms": [],
        "storage-init first request, ms after start": [],
        "s5cmd 2-byte object, wall ms": [],
    }
    for _ in range(runs):
        m = run_measured([*storage_init_argv(), "--version"], env=env)
        figures["storage-init --version, wall ms"].append(m.wall * 1e3)
        dest = work / "out-tiny"
        shutil.rmtree(dest, ignore_errors=True)
        m = run_measured([*storage_init_argv(), "--debug", url, str(dest)], env=env)
        figures["storage-init 2-byte object, wall ms"].append(m.wall * 1e3)
        if found := re.search(r"first request (\d+) ms", m.stderr):
            figures["storage-init first request, ms after start"].append(
                float(found[1])
            )
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir()
        m = run_measured(s5cmd_copy(url, dest, env), env=env)
        figures["s5cmd 2-byte object, wall ms"].append(m.wall * 1e3)
    shutil.rmtree(work / "out-tiny", ignore_errors=True)
    return figures


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def _table(runs: list[Run], seeds: list[str]) -> str:
    # In the harness's order: the runs come in a shuffled one.
    tools = sorted({r.tool for r in runs}, key=list(TOOLS).index)
    lines = [
        "| workload, upload style | tool | wall s | CPU s | server CPU s "
        "| peak RSS MiB | identical |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        for tool in tools:
            rs = [r for r in runs if r.seed == seed and r.tool == tool]
            if not rs:
                continue
            lines.append(
                f"| {seed} | {tool} | {_median_range([r.wall for r in rs])} | "
                f"{_median_range([r.cpu for r in rs])} | "
                f"{_median_range([r.server_cpu for r in rs])} | "
                f"{_median_range([r.max_rss_mib for r in rs])} | "
                f"{all(r.identical and r.code == 0 for r in rs)} |"
            )
    peers = [t for t in tools if t != "storage-init"]
    lines += [
        "",
        "storage-init's median wall time divided by each peer's (below 1: faster):",
        "",
        "| workload, upload style | " + " | ".join(peers) + " |",
        "|---|" + "---|" * len(peers),
    ]
    for seed in seeds:
        ours = [r.wall for r in runs if r.seed == seed and r.tool == "storage-init"]
        cells = []
        for peer in peers:
            theirs = [r.wall for r in runs if r.seed == seed and r.tool == peer]
            ok = ours and theirs
            cells.append(
                f"{statistics.median(ours) / statistics.median(theirs):.2f}"
                if ok
                else "-"
            )
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shard-mib", type=int, default=1024)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run of 2 x 64 MiB shards, storage-init and s5cmd (about a minute;"
        " 2 the first time, which makes storage-init's and the chart's virtualenvs)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(t for t in TOOLS if t != "storage-init-tree"),
        help="comma-separated tools to run",
    )
    parser.add_argument("--small-count", type=int, default=1000)
    parser.add_argument(
        "--away-ms",
        type=int,
        default=30,
        help="the small files again, every response this late (0: not)",
    )
    parser.add_argument(
        "--big-gib",
        type=int,
        default=4,
        help="size of the single-file workload (0: none)",
    )
    parser.add_argument(
        "--scaling",
        default="0.25,1,4,8",
        help="GiB sizes of the scaling series (the model at each size, SDK upload);"
        " empty: none",
    )
    parser.add_argument(
        "--backends",
        default="s3,gcs,azure,http",
        help="then one large file from each of these stores' servers, against the "
        "peers that speak each protocol (benchmarks.backends); empty: none",
    )
    parser.add_argument("--backends-gib", type=float, default=2)
    parser.add_argument("--work", type=Path, default=WORK, help="scratch directory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    if args.quick:
        args.runs, args.shard_mib, args.big_gib, args.scaling = 1, 64, 0, ""
        args.backends = ""
        tools = ["storage-init", "s5cmd"]
    unknown = set(tools) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    tools = sorted(set(tools), key=list(TOOLS).index)  # the tables' column order
    rclones = [t for t in tools if t.startswith("rclone")]
    if rclones and not _ensure_rclone():
        print("rclone is not installed and cannot be: left out", file=sys.stderr)
        tools = [t for t in tools if t not in rclones]
    work: Path = args.work
    out: Path = args.out
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(
        work / f"model-{args.shard_mib}", shard_bytes=args.shard_mib << 20, shards=2
    )
    count = args.small_count
    small = make_small_files(work / f"small-{count}", count=count, size=100 * 1024)
    both: dict[str, Seeder] = {
        "s5cmd-upload (MD5)": seed_s5cmd,
        "sdk-upload (CRC64NVME)": seed_sdk,
    }
    sdk_only: dict[str, Seeder] = {"sdk-upload (CRC64NVME)": seed_sdk}
    workloads: dict[str, tuple[Path, dict[str, Seeder]]] = {
        f"model 2x{args.shard_mib}MiB": (model, both),
        f"{count} x 100KiB": (small, both),
    }
    if args.big_gib:
        big = make_big_file(work / f"big-{args.big_gib}", size=args.big_gib << 30)
        workloads[f"one {args.big_gib} GiB file"] = (big, both)
    for gib in [float(g) for g in args.scaling.split(",") if g]:
        scaled = make_model(
            work / f"scale-{gib:g}", shard_bytes=int(gib * 2**30) // 2, shards=2
        )
        # One upload style: the series is about how time grows with size.
        workloads[f"scaling {gib:g} GiB"] = (scaled, sdk_only)
    away_of = f"{count} x 100KiB"
    away_name = f"{count} x 100KiB, {args.away_ms} ms away"
    # Every run seeds afresh; SeaweedFS would otherwise keep the old copies (tens of
    # GiB after a few full runs) until a vacuum.
    shutil.rmtree(work / "seaweedfs", ignore_errors=True)
    env = _start_server(work)
    delay: subprocess.Popen[str] | None = None
    try:
        urls: dict[str, str] = {}
        sources: dict[str, Path] = {}
        for w, (workload, (local, seeds)) in enumerate(workloads.items()):
            for i, (name, seed) in enumerate(seeds.items()):
                label = f"{workload}, {name}"
                url = f"s3://{env['S3_BUCKET']}/bench-{args.shard_mib}-{w}-{i}/data"
                started = time.perf_counter()
                seed(local, url, env)
                elapsed = time.perf_counter() - started
                print(f"seeded {label} in {elapsed:.1f} s", flush=True)
                urls[label] = url
                sources[label] = local
        # The same objects, through the delaying proxy.
        away: set[str] = set()
        if args.away_ms:
            for label in list(urls):
                workload, _, name = label.partition(", ")
                if workload == away_of:
                    away.add(f"{away_name}, {name}")
                    urls[f"{away_name}, {name}"] = urls[label]
                    sources[f"{away_name}, {name}"] = sources[label]
        # SeaweedFS keeps growing its heap while it ingests (about 1 GB per 2 GiB
        # uploaded) and serves more slowly afterwards; restart it on the same data
        # so that every tool meets a server in its steady state.
        _stop_server(work)
        env = _start_server(work)
        startup = _startup(work, env, max(args.runs, 5))
        runs: list[Run] = []
        for rnd in range(args.runs):
            if rnd:
                # Serving, SeaweedFS grew to 2.6 GB of RSS and 3x the CPU per GiB
                # by the second round of a full run: each round gets a fresh one.
                _stop_delay(delay)
                delay = None
                _stop_server(work)
                env = _start_server(work)
            away_env = dict(env)
            if away:
                delay, away_env["AWS_ENDPOINT_URL"] = _start_delay(env, args.away_ms)
            server = int((work / "seaweedfs" / "pid").read_text())
            for seed_name, url in urls.items():
                warm_up(url, env)
                tool_env = away_env if seed_name in away else env
                before_tool = "warm-up"
                for tool in run_order(tools, rnd, seed_name):
                    dest = fresh_dest(work / "out")
                    before = _process_cpu(server)
                    m: Measured = run_measured(
                        TOOLS[tool](url, dest, tool_env), env=tool_env
                    )
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
                        _process_cpu(server) - before,
                        before_tool,
                    )
                    before_tool = tool
                    runs.append(run)
                    print(
                        f"{rnd} {seed_name:<44} {tool:<13} wall {m.wall:6.2f} s  "
                        f"cpu {m.cpu:5.2f} s  server {run.server_cpu:5.2f} s  "
                        f"rss {run.max_rss_mib:6.1f} MiB  "
                        f"ok={run.identical and m.code == 0}",
                        flush=True,
                    )
                    if m.code != 0:
                        print(m.stderr[-2000:], file=sys.stderr)
        shutil.rmtree(work / "out", ignore_errors=True)
    finally:
        _stop_delay(delay)
        _stop_server(work)
        # Reseeded by every run; tens of GB after a full one.
        shutil.rmtree(work / "seaweedfs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    table = _table(runs, list(urls))
    (out / "latest.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "tools": tools,
                "shard_mib": args.shard_mib,
                "startup_ms": startup,
                "runs": [asdict(r) for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    table += "\nStart-up (same server):\n\n| figure | median (min-max) |\n|---|---|\n"
    table += "".join(
        f"| {name} | {_median_range(values)} |\n"
        for name, values in startup.items()
        if values
    )
    also_away = (
        f" (also {args.away_ms} ms away: every response that late, through "
        "benchmarks.delayproxy)"
        if args.away_ms
        else ""
    )
    workloads_text = [
        f"a model of 2 x {args.shard_mib} MiB shards + 6 small files",
        f"{count} files of 100 KiB{also_away}",
    ]
    if args.big_gib:
        workloads_text.append(f"one {args.big_gib} GiB file")
    if args.scaling:
        workloads_text.append(
            f"the scaling series (the model at {args.scaling} GiB, SDK upload only)"
        )
    header = (
        f"Workloads: {', '.join(workloads_text)}; {args.runs} "
        "rounds, each in its own shuffled order; median (min-max).\n"
        f"Machine: {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['cpu']}, Python {machine['python']}, s5cmd {machine['s5cmd']}, "
        f"storage-init at {machine['commit']}; {machine['server']}.\n\n"
    )
    (out / "latest.md").write_text(header + table)
    chart = out / "latest.png"
    if not args.no_chart:
        subprocess.run(
            [
                _plot_python(),
                str(ROOT / "benchmarks" / "chart.py"),
                str(out / "latest.json"),
                str(chart),
            ],
            check=False,
        )
    print(header + table)
    if args.backends:
        # Its own process and servers; results beside these (backends.{json,md}).
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.backends",
                "--backends",
                args.backends,
                "--size-gib",
                str(args.backends_gib),
                "--runs",
                str(args.runs),
                "--work",
                str(work / "backends"),
                "--out",
                str(out),
            ],
            cwd=ROOT,
            check=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
