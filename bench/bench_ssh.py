"""Benchmark: deploying to and starting SSH injectors, 1 host against 10 (real sshd on loopback).

For each fleet size N, N OpenSSH servers run on 127.0.0.2, 127.0.0.3, ... (tests/integration/sshd.py;
each has its own home, so relative remote paths are separate per host, as on separate machines).
One SshFleet connects to all of them, then:

1. cold: `ensure_bundle` of Gatling's classpath (the real jars of a `spike build` in ~/.cache/spike
   when there is one, ~57 MB; otherwise --synthetic-mb of incompressible jar-like data), then
   `ensure_bundle` of a small compiled-simulation tar, then `start_detached_all` of a command.
2. warm (--repeat times each, medians), the path of every run after the first:
   - same profile: classpath and simulation cached on every host (nothing sent), then the start;
   - changed profile: classpath cached, a new simulation (new digest) sent, then the start.
3. clock offsets: `clock_offsets(8)` on all hosts.

Target: warm push + start on 10 hosts <= 2x the time on 1 host (spike fans out per host, so a
bigger fleet should cost little more wall time).

The "hosts" and this process share this machine's CPUs, so every number includes the hosts' own
work (sshd, shells, tar: per host, on real injectors it runs on their own CPUs). The CPU columns
show both sides: what spike used, and what the hosts used (divided by the CPUs here: the least
wall time those hosts could take on this machine, whatever spike does).

Usage: ``python3 bench/bench_ssh.py [--hosts 1,10] [--repeat 5] [--synthetic-mb 60]``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import psutil  # noqa: E402
from sshd import SshdHost, start_hosts  # noqa: E402

from loadorch.transport import SshFleet, SshHost, generate_client_key  # noqa: E402

TARGET_RATIO = 2.0
OUT = REPO / "bench" / "out" / "ssh.json"
COMMAND = "sleep 30"  # stands in for the Gatling JVM: the start, not the work, is measured


def gatling_classpath() -> tuple[list[Path], Path | None]:
    """The jars and compiled classes of the newest `spike build` in ~/.cache/spike, if any."""
    builds = Path.home() / ".cache" / "spike" / "gatling-builds"
    for build in sorted(builds.glob("*/classpath.txt"), key=lambda p: p.stat().st_mtime, reverse=True):
        jars = [Path(p) for p in build.read_text().strip().split(":") if p.endswith(".jar")]
        if jars and all(jar.is_file() for jar in jars):
            classes = build.parent / "target" / "test-classes"
            return jars, classes if classes.is_dir() else None
    return [], None


def make_tar(path: Path, files: dict[str, Path | bytes]) -> str:
    """An uncompressed tar (jars are compressed already); returns its sha256 digest (first 20 hex)."""
    with tarfile.open(path, "w") as tar:
        for name, source in sorted(files.items()):
            if isinstance(source, Path):
                tar.add(source, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(source)
                info.mtime = 1_700_000_000
                tar.addfile(info, fileobj=_Bytes(source))
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset : end], min(end, len(self.data))
        return chunk


def bundles(work: Path, synthetic_mb: int) -> tuple[Path, str, Path, str, str]:
    """(classpath tar, digest, simulation tar, digest, description of the classpath)."""
    jars, classes = gatling_classpath()
    if jars:
        files: dict[str, Path | bytes] = {f"lib/{jar.name}": jar for jar in jars}
        what = f"Gatling 3.11.5 classpath from ~/.cache/spike: {len(jars)} jars"
    else:
        rng = os.urandom
        files = {f"lib/dep-{i:03d}.jar": rng(synthetic_mb * (1 << 20) // 100) for i in range(100)}
        what = "synthetic: 100 incompressible jar-like files (no `spike build` cache found)"
    classpath_tar = work / "classpath.tar"
    classpath_digest = make_tar(classpath_tar, files)
    if classes is not None:
        simulation: dict[str, Path | bytes] = {"classes": classes}
    else:
        simulation = {f"classes/spike/Sim{i}.class": os.urandom(4_000) for i in range(12)}
    simulation_tar = work / "simulation.tar"
    simulation_digest = make_tar(simulation_tar, simulation)
    return classpath_tar, classpath_digest, simulation_tar, simulation_digest, what


def hosts_cpu_s(hosts: list[SshdHost]) -> float:
    """CPU seconds used so far by the hosts' sshd processes and what they ran and reaped."""
    total = 0.0
    for host in hosts:
        if host.process is None:
            continue
        with contextlib.suppress(psutil.Error):
            listener = psutil.Process(host.process.pid)
            for proc in [listener, *listener.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
    return total


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def deploy_and_start(
    fleet: SshFleet, classpath: tuple[Path, str], simulation: tuple[Path, str], workdir: str
) -> dict[str, float]:
    """One run's deployment: classpath (maybe cached), simulation, detached start; seconds per step."""
    times = {
        "classpath_s": timed(
            lambda: fleet.ensure_bundle(classpath[0], classpath[1], "spike/cache/classpath")
        ),
        "simulation_s": timed(
            lambda: fleet.ensure_bundle(simulation[0], simulation[1], "spike/cache/simulation")
        ),
        "start_s": timed(
            lambda: fleet.start_detached_all(
                dict.fromkeys(fleet.names, COMMAND), workdir=workdir, log_name="gatling.log"
            )
        ),
    }
    times["total_s"] = sum(times.values())
    for name in fleet.names:  # not timed: the next run starts from a quiet host
        fleet.signal(name, workdir, "gatling.log")
    return times


def warm_runs(
    fleet: SshFleet,
    hosts: list[SshdHost],
    classpath: tuple[Path, str],
    simulation: tuple[Path, str],
    repeat: int,
    *,
    new_simulation: bool,
) -> dict:
    """`repeat` warm deployments: medians per step and the CPU spike and the hosts used per deployment."""
    tag = "new-sim" if new_simulation else "same-sim"
    spike_before, hosts_before = own_cpu_s(), hosts_cpu_s(hosts)
    runs = [
        deploy_and_start(
            fleet,
            classpath,
            (simulation[0], f"{simulation[1]}-{i}") if new_simulation else simulation,
            f"spike/runs/{tag}-{i}",
        )
        for i in range(repeat)
    ]
    return {
        "median": {key: statistics.median(run[key] for run in runs) for key in runs[0]},
        "runs": runs,
        # (the signals after each run are counted too: a small overestimate)
        "cpu_s": {
            "spike": (own_cpu_s() - spike_before) / repeat,
            "hosts": (hosts_cpu_s(hosts) - hosts_before) / repeat,
        },
    }


def bench_fleet(
    n: int, work: Path, key: Path, public: str, tars: tuple[Path, str, Path, str], repeat: int
) -> dict:
    classpath_tar, classpath_digest, simulation_tar, simulation_digest = tars
    classpath, simulation = (classpath_tar, classpath_digest), (simulation_tar, simulation_digest)
    hosts = start_hosts(work / f"fleet-{n}", n, public)
    try:
        fleet = SshFleet(
            [
                SshHost(
                    name=f"inj-{i}",
                    address=host.address,
                    port=host.port,
                    key_path=key,
                    host_key_fingerprints=(host.host_fingerprint,),
                )
                for i, host in enumerate(hosts, start=1)
            ]
        )
        with fleet:
            connect_s = timed(fleet.connect)
            cold = deploy_and_start(fleet, classpath, simulation, "spike/runs/cold")
            # The same profile again: nothing to send. A changed profile: only the simulation.
            same = warm_runs(fleet, hosts, classpath, simulation, repeat, new_simulation=False)
            changed = warm_runs(fleet, hosts, classpath, simulation, repeat, new_simulation=True)
            clocks = fleet.clock_offsets(8)
    finally:
        for host in hosts:
            host.stop()
    return {
        "hosts": n,
        "connect_s": connect_s,
        "cold": cold,
        "warm_same_simulation": same,
        "warm_new_simulation": changed,
        "clock_max_abs_offset_ms": max(abs(c.offset_ms) for c in clocks.values()),
        "clock_max_rtt_ms": max(c.rtt_ms for c in clocks.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hosts", default="1,10", help="fleet sizes, comma-separated (first is the baseline)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="warm deployments per fleet size (median)")
    parser.add_argument(
        "--synthetic-mb", type=int, default=60, help="classpath size without a spike build cache"
    )
    args = parser.parse_args()
    sizes = [int(n) for n in args.hosts.split(",")]

    with tempfile.TemporaryDirectory(prefix="spike-bench-ssh-") as scratch:
        work = Path(scratch)
        key = work / "id_ed25519"
        public = generate_client_key(key)
        classpath_tar, classpath_digest, simulation_tar, simulation_digest, what = bundles(
            work, args.synthetic_mb
        )
        mb = classpath_tar.stat().st_size / 1e6
        sim_kb = simulation_tar.stat().st_size / 1e3
        print(f"classpath bundle: {mb:.1f} MB ({what}); simulation bundle: {sim_kb:.0f} kB")
        cpus = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
        print(
            f"{cpus} CPUs shared by this process and every sshd (load average {load:.1f} before); "
            f"Python {sys.version.split()[0]}"
        )
        tars = (classpath_tar, classpath_digest, simulation_tar, simulation_digest)
        results = [bench_fleet(n, work, key, public, tars, args.repeat) for n in sizes]

    print("\ncold (first deployment: the classpath is sent)")
    print(
        f"{'hosts':>5} {'connect':>8} {'classpath':>10} {'MB/s (all)':>11} {'simulation':>11} {'start':>7} {'total':>7}"
    )
    for r in results:
        cold = r["cold"]
        print(
            f"{r['hosts']:>5} {r['connect_s']:>7.2f}s {cold['classpath_s']:>9.2f}s "
            f"{mb * r['hosts'] / cold['classpath_s']:>11.0f} {cold['simulation_s']:>10.3f}s "
            f"{cold['start_s']:>6.3f}s {cold['total_s']:>6.2f}s"
        )
    scenarios = (
        ("warm_same_simulation", "warm, same profile (classpath and simulation cached: nothing sent)"),
        ("warm_new_simulation", "warm, changed profile (classpath cached, the new simulation sent)"),
    )
    for scenario, title in scenarios:
        print(f"\n{title}; median of {args.repeat}")
        print(
            f"{'hosts':>5} {'classpath':>10} {'simulation':>11} {'start':>7} {'total':>7} "
            f"{'spike CPU':>10} {'hosts CPU':>10} {'hosts CPU / ' + str(cpus) + ' CPUs':>18}"
        )
        for r in results:
            warm, cpu = r[scenario]["median"], r[scenario]["cpu_s"]
            print(
                f"{r['hosts']:>5} {warm['classpath_s']:>9.3f}s {warm['simulation_s']:>10.3f}s "
                f"{warm['start_s']:>6.3f}s {warm['total_s']:>6.3f}s {cpu['spike'] * 1000:>8.1f}ms "
                f"{cpu['hosts'] * 1000:>8.1f}ms {cpu['hosts'] / cpus * 1000:>16.1f}ms"
            )
    print("\nclock offsets (8 round trips per host)")
    for r in results:
        print(
            f"{r['hosts']:>5} hosts: max |offset| {r['clock_max_abs_offset_ms']:.2f} ms, "
            f"max rtt {r['clock_max_rtt_ms']:.2f} ms"
        )
    print()
    base = results[0]
    failed = False
    for r in results[1:]:
        ratios = {"cold": r["cold"]["total_s"] / base["cold"]["total_s"]}
        for scenario, _ in scenarios:
            ratios[scenario] = r[scenario]["median"]["total_s"] / base[scenario]["median"]["total_s"]
        r["ratio_to_baseline"] = ratios
        print(f"{r['hosts']} hosts vs {base['hosts']}: cold x{ratios['cold']:.2f}")
        for scenario, _ in scenarios:
            ok = ratios[scenario] <= TARGET_RATIO
            failed |= not ok
            floor_ms = r[scenario]["cpu_s"]["hosts"] / cpus * 1000
            one_after_another = r["hosts"] * base[scenario]["median"]["total_s"] / base["hosts"]
            r.setdefault("speedup_vs_one_after_another", {})[scenario] = (
                one_after_another / r[scenario]["median"]["total_s"]
            )
            print(
                f"  {scenario.replace('_', ' ')}: push+start x{ratios[scenario]:.2f} (target <= x{TARGET_RATIO:.0f}) "
                f"{'OK' if ok else 'ABOVE TARGET'}; "
                f"{r['speedup_vs_one_after_another'][scenario]:.1f}x faster than one host after another"
                + (
                    ""
                    if ok
                    else f"; the {r['hosts']} hosts' own work (sshd, shells, tar) alone needs {floor_ms:.0f} ms "
                    f"of this machine's {cpus} CPUs, spike's side {r[scenario]['cpu_s']['spike'] * 1000:.0f} ms"
                )
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "cpus": cpus,
                "load_average_before": load,
                "classpath_mb": mb,
                "classpath": what,
                "simulation_kb": sim_kb,
                "target_ratio": TARGET_RATIO,
                "results": results,
            },
            indent=2,
            sort_keys=True,
        )
    )
    print(f"written: {OUT.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
