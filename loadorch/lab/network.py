"""The lab's network: one bridge, one edge address per region, one network namespace per host.

The plan is fixed, because the latency proxy, the end-to-end tests and the README rely on it:

    spklab0                 a Linux bridge in this machine's namespace, 198.18.0.1/16
    198.18.i.1/32           region i's "edge" (the address its latency proxy listens on), on spklab0
    198.18.i.(10+n)/16      host n of region i, on `eth0` of netns `spkl-<instance id>`,
                            a veth whose other end `spkl<i>h<n>` is a port of spklab0;
                            default route via 198.18.0.1

198.18.0.0/15 is RFC 2544's benchmarking range: never routed on the internet, and used here only
inside what the lab makes (`check_range_free` refuses to start when anything on this machine uses
it already). SSH from this machine to the hosts comes from 198.18.0.1, so the lab's operator CIDR
is 198.18.0.1/32.

Traffic never leaves the lab: the bridge does not forward (`net.ipv4.conf.spklab0.forwarding=0`),
so a host's packets reach this machine's own addresses (the edges, 198.18.0.1) and nothing
beyond; IPv6 is off on every lab interface. Every object the lab makes is named with the prefix
`spkl`, so `sweep` finds and removes leftovers even after the daemon died.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from loadorch.errors import InfrastructureError, PreflightError

PREFIX = "spkl"
BRIDGE = "spklab0"
GATEWAY = "198.18.0.1"
LAB_PREFIX_LEN = 16
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/16")
RESERVED_NETWORK = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: the whole range must be free
OPERATOR_CIDR = f"{GATEWAY}/32"
MAX_REGIONS = 254
MAX_HOSTS_PER_REGION = 244  # 198.18.i.11 .. 198.18.i.254
IP = "ip"


def edge_address(region_number: int) -> str:
    """Region i's edge address, 198.18.i.1: its latency proxy listens there."""
    _check_region_number(region_number)
    return f"198.18.{region_number}.1"


def host_address(region_number: int, host_number: int) -> str:
    """Host n of region i: 198.18.i.(10+n)."""
    _check_region_number(region_number)
    if not 1 <= host_number <= MAX_HOSTS_PER_REGION:
        raise ValueError(f"host number {host_number} is outside 1..{MAX_HOSTS_PER_REGION}")
    return f"198.18.{region_number}.{10 + host_number}"


def netns_name(instance_id: str) -> str:
    """The network namespace of an instance's host: spkl-i-0123abcd."""
    return f"{PREFIX}-{instance_id}"


def veth_name(region_number: int, host_number: int) -> str:
    """The bridge-side end of host n of region i (at most 11 characters; Linux allows 15)."""
    return f"{PREFIX}{region_number}h{host_number}"


def _check_region_number(number: int) -> None:
    if not 1 <= number <= MAX_REGIONS:
        raise ValueError(f"region number {number} is outside 1..{MAX_REGIONS}")


def _ip(*args: str, check: bool = True, timeout_s: float = 15.0) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError as exc:
        raise PreflightError(
            "the `ip` command (iproute2) is missing", fix="apt-get install iproute2"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise InfrastructureError(f"`ip {' '.join(args)}` did not finish within {timeout_s:.0f} s") from exc
    if check and done.returncode != 0:
        raise InfrastructureError(
            f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.stdout.strip()}",
            where="lab network",
            fix="run `spike lab down` to remove leftovers of an earlier lab, then try again",
        )
    return done


def _write_sysctl(path: str, value: str) -> None:
    with contextlib.suppress(OSError), open(path, "w", encoding="ascii") as handle:
        handle.write(value)


# -- checks --------------------------------------------------------------------------------------


def check_range_free() -> None:
    """Refuse when anything in this machine's namespace other than the lab uses 198.18.0.0/15."""
    users: list[str] = []
    for link in json.loads(_ip("-j", "addr", "show").stdout or "[]"):
        name = str(link.get("ifname", "?"))
        if name.startswith(PREFIX):
            continue
        for info in link.get("addr_info", []):
            if info.get("family") != "inet":
                continue
            network = ipaddress.ip_network(f"{info['local']}/{info.get('prefixlen', 32)}", strict=False)
            if network.overlaps(RESERVED_NETWORK):
                users.append(f"address {info['local']}/{info.get('prefixlen')} on {name}")
    for route in json.loads(_ip("-j", "route", "show", "table", "all").stdout or "[]"):
        if str(route.get("dev", "")).startswith(PREFIX):
            continue
        destination = str(route.get("dst", ""))
        if destination in ("", "default"):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(destination, strict=False).overlaps(RESERVED_NETWORK):
                users.append(f"route {destination} via {route.get('dev', '?')}")
    if users:
        raise PreflightError(
            "the lab needs 198.18.0.0/15 (RFC 2544's benchmarking range) to itself, but this machine "
            "uses it already: " + "; ".join(users),
            where="lab network",
            fix="remove those addresses and routes, or run the lab on a machine that does not use 198.18.0.0/15",
        )


def check_netns_support() -> None:
    """Prove that network namespaces work here: create and delete a throwaway one."""
    probe = f"{PREFIX}-probe-{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        raise PreflightError(
            f"network namespaces do not work on this machine: {done.stderr.strip()}",
            where="lab network",
            fix="run as root on a Linux kernel with network namespaces (CONFIG_NET_NS), outside a "
            "restricted container",
        )
    _ip("netns", "del", probe, check=False)


# -- the bridge and the edges -------------------------------------------------------------------


def bridge_up() -> None:
    """spklab0 with 198.18.0.1/16, not forwarding, no IPv6 (idempotent)."""
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        _ip("link", "add", BRIDGE, "type", "bridge")
    _write_sysctl(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1")
    _write_sysctl(f"/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding", "0")
    _ensure_address(f"{GATEWAY}/{LAB_PREFIX_LEN}", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def add_edge(region_number: int) -> str:
    """Add region i's edge address 198.18.i.1/32 to the bridge; returns the address."""
    address = edge_address(region_number)
    _ensure_address(f"{address}/32", BRIDGE)
    return address


def _ensure_address(cidr: str, device: str) -> None:
    done = _ip("addr", "add", cidr, "dev", device, check=False)
    if done.returncode != 0 and "File exists" not in done.stderr:
        raise InfrastructureError(
            f"cannot add {cidr} to {device}: {done.stderr.strip()}", where="lab network"
        )


# -- hosts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostNetwork:
    """Where one host lives on the lab network."""

    netns: str
    veth: str
    address: str
    region_number: int
    host_number: int


def create_host_network(instance_id: str, region_number: int, host_number: int) -> HostNetwork:
    """The host's netns with `eth0` at its address, plugged into the bridge; all or nothing."""
    net = HostNetwork(
        netns=netns_name(instance_id),
        veth=veth_name(region_number, host_number),
        address=host_address(region_number, host_number),
        region_number=region_number,
        host_number=host_number,
    )
    peer = f"{PREFIX}{region_number}g{host_number}"
    try:
        _ip("netns", "add", net.netns)
        _ip("link", "add", net.veth, "type", "veth", "peer", "name", peer, "netns", net.netns)
        _write_sysctl(f"/proc/sys/net/ipv6/conf/{net.veth}/disable_ipv6", "1")
        _ip("link", "set", net.veth, "master", BRIDGE, "up")
        _ip("-n", net.netns, "link", "set", peer, "name", "eth0")
        _ip("-n", net.netns, "addr", "add", f"{net.address}/{LAB_PREFIX_LEN}", "dev", "eth0")
        _ip("-n", net.netns, "link", "set", "lo", "up")
        _ip("-n", net.netns, "link", "set", "eth0", "up")
        _ip("-n", net.netns, "route", "add", "default", "via", GATEWAY)
    except BaseException:
        delete_host_network(net.netns, net.veth)
        raise
    return net


def netns_pids(netns: str) -> list[int]:
    """Every process in a named network namespace (this machine's pid numbers)."""
    done = _ip("netns", "pids", netns, check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def kill_netns_processes(netns: str, timeout_s: float = 10.0) -> int:
    """SIGKILL everything in the namespace and wait until it is gone; returns how many were killed."""
    pids = netns_pids(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in netns_pids(netns) if not _is_zombie(pid)]
        if not alive:
            break
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return len(pids)


def _is_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] in ("Z", "X")


def delete_host_network(netns: str, veth: str | None = None) -> None:
    """Remove a host's namespace (its processes are killed first) and its bridge port."""
    if netns in list_netns():
        kill_netns_processes(netns)
        _ip("netns", "del", netns, check=False)
    if veth is not None:
        _ip("link", "del", veth, check=False)


# -- sweeping ------------------------------------------------------------------------------------


def list_netns() -> list[str]:
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def lab_netns() -> list[str]:
    """Every network namespace named like the lab's (spkl*)."""
    return [name for name in list_netns() if name.startswith(PREFIX)]


def lab_links() -> list[str]:
    """Every link in this machine's namespace named like the lab's (the bridge, veth ends)."""
    links = json.loads(_ip("-j", "link", "show").stdout or "[]")
    return [str(link["ifname"]) for link in links if str(link.get("ifname", "")).startswith(PREFIX)]


def sweep() -> list[str]:
    """Remove every spkl* namespace (killing what runs in it) and every spkl* link; says what went."""
    removed: list[str] = []
    for netns in lab_netns():
        killed = kill_netns_processes(netns)
        _ip("netns", "del", netns, check=False)
        removed.append(f"netns {netns}" + (f" ({killed} processes killed)" if killed else ""))
    # veth ends go with their peers; what is left is the bridge and ends whose peer was elsewhere
    for link in lab_links():
        if _ip("link", "del", link, check=False).returncode == 0:
            removed.append(f"link {link}")
    return removed
