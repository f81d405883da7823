"""`spike lab up|down|status|hosts|lose-hosts|fail-apply|latency|cut|restore`: the emulated cloud."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from loadorch.cli.common import console, handles_errors
from loadorch.errors import BadInputError
from loadorch.lab.control import LabClient, LabInfo, lab_down, lab_status, lab_up
from loadorch.lab.state import (
    DEFAULT_PORT,
    DEFAULT_REGIONS,
    DEFAULT_SSH_USER,
    DEFAULT_TARGET_PORT,
    LabSettings,
    default_state_dir,
)

app = typer.Typer(
    help="The lab: moto's EC2 with real hosts (network namespaces, sshd, user_data) and per-region "
    "latency, in which `spike run --provider aws` runs on this machine. Needs root.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="The lab's state directory (default: ~/.cache/spike/lab)."),
]
Region = Annotated[str, typer.Option("--region", help="A region of the lab, e.g. us-east-1.")]


def _state(state_dir: Path | None) -> Path:
    return (state_dir or default_state_dir()).resolve()


def _regions(text: str) -> tuple[str, ...]:
    from loadorch.providers.terraform.config import AWS_REGIONS

    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in regions if r not in AWS_REGIONS]
    if not regions or unknown or len(set(regions)) != len(regions):
        raise BadInputError(
            f"--regions {text!r}: "
            + (f"unknown {', '.join(unknown)}" if unknown else "give each region once"),
            fix=f"use AWS region codes, e.g. {','.join(DEFAULT_REGIONS)}",
        )
    return regions


def show_next_steps(info: LabInfo) -> None:
    """What to export and run next, with the lab's real values."""
    regions = ",".join(r.name for r in info.regions)
    console.print(f"[green]lab[/]: up (daemon pid {info.pid}, state dir {info.state_dir})")
    console.print(f"  moto endpoint   {info.endpoint}", markup=False)
    for region in info.regions:
        latency = (
            f"+{region.latency_ms:g} ms round trip to the target"
            if region.latency_ms is not None
            else "no latency"
        )
        console.print(
            f"  region {region.number:<8} {region.name} (edge {region.edge}, {latency})", markup=False
        )
    console.print(
        f"  target          {info.target_url} (each region's hosts reach 127.0.0.1:{info.target_port} "
        "through their region's edge)",
        markup=False,
    )
    console.print(f"  operator CIDR   {info.operator_cidr} (SSH to the hosts comes from there)", markup=False)
    root = (
        "copy-on-write overlay of this machine's /"
        if info.rootfs == "overlay"
        else "BIND FALLBACK: own /etc, /home, /opt, /root, /var/log; other writes reach this machine"
    )
    console.print(f"  hosts' root     {root}", markup=False)
    console.print("\nNext:", markup=False)
    exports = " ".join(f"{k}={v}" for k, v in info.env.items())
    console.print(f"  export {exports}", markup=False)
    console.print(
        f"  spike target serve --port {info.target_port} &   # or any server on 127.0.0.1:{info.target_port}"
    )
    console.print(
        f"  # in the profile: target: {{base_url: {info.target_url}, allow_hosts: [{info.target_host}]}}",
        markup=False,
    )
    console.print(
        f"  spike run --provider aws --aws-endpoint {info.endpoint} --operator-cidr {info.operator_cidr} "
        f"--regions {regions} --target {info.target_url} --profile PROFILE",
        markup=False,
    )
    console.print("  spike lab status; spike lab down", markup=False)


@app.command("up")
@handles_errors
def up(
    state_dir: StateDir = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="moto's port on 127.0.0.1.")] = DEFAULT_PORT,
    regions: Annotated[
        str, typer.Option(help="The lab's regions, in order (region i gets 198.18.i.0).")
    ] = ",".join(DEFAULT_REGIONS),
    latency: Annotated[
        str | None,
        typer.Option(help="Added round trip per region, REGION=MS[/JITTER],...; others get the defaults."),
    ] = None,
    no_latency: Annotated[bool, typer.Option("--no-latency", help="Run without the latency proxy.")] = False,
    target_port: Annotated[
        int, typer.Option(min=1, max=65535, help="The target's port on 127.0.0.1 (and on each edge).")
    ] = DEFAULT_TARGET_PORT,
    ssh_user: Annotated[str, typer.Option(help="The image's login user on every host.")] = DEFAULT_SSH_USER,
    rootfs: Annotated[
        str,
        typer.Option(
            help="Each host's root: overlay (copy-on-write of /), bind (own /etc, /home, /opt, /root, "
            "/var/log bound over this machine's), or auto (overlay where the kernel can)."
        ),
    ] = "auto",
) -> None:
    """Start the lab in the background and wait until moto answers and the network is up."""
    if rootfs not in ("auto", "overlay", "bind"):
        raise typer.BadParameter(f"{rootfs!r}; valid values: auto, overlay, bind", param_hint="--rootfs")
    latency_ms: dict[str, float] = {}
    jitter_ms: dict[str, float] = {}
    if latency and not no_latency:
        from loadorch.lab.latency import parse_latencies

        parsed = parse_latencies(latency)
        latency_ms = dict(parsed)
        jitter_ms = {region: parsed.jitter(region) for region in parsed if parsed.jitter(region)}
    settings = LabSettings(
        state_dir=_state(state_dir),
        port=port,
        regions=_regions(regions),
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        target_port=target_port,
        ssh_user=ssh_user,
        latency=not no_latency,
        rootfs=rootfs,
    )
    show_next_steps(lab_up(settings))


@app.command("down")
@handles_errors
def down(state_dir: StateDir = None) -> None:
    """Terminate every host, stop moto and the latency proxy, remove every spkl* namespace and link
    and the state dir. Safe to run twice, and after the daemon was killed."""
    for line in lab_down(_state(state_dir)):
        console.print(f"lab: {line}", markup=False)


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%H:%M:%S", time.localtime(epoch))


@app.command("status")
@handles_errors
def status(state_dir: StateDir = None) -> None:
    """The lab's regions and hosts (instance, region, address, state, bootstrap done?)."""
    answer = lab_status(_state(state_dir))
    if not answer["running"]:
        console.print(f"[yellow]lab[/]: not running (state dir {answer['state_dir']})")
        for item in answer["leftovers"]:
            console.print(f"  leftover {item}: `spike lab down` removes it", markup=False)
        return
    lab = answer["lab"]
    console.print(
        f"[green]lab[/]: running on {lab['endpoint']} (pid {lab['pid']}, state dir {lab['state_dir']}, "
        f"hosts' root: {lab.get('rootfs', 'overlay')})"
    )
    for region in answer["regions"]:
        extra = []
        if region.get("latency_ms") is not None:
            extra.append(f"+{region['latency_ms']:g} ms")
        if region.get("cut"):
            extra.append("CUT")
        if region.get("fail_apply"):
            extra.append(f"fail-apply: {region['fail_apply']}")
        console.print(
            f"  region {region['number']:<3} {region['name']:<16} edge {region['edge']:<12} {' '.join(extra)}",
            markup=False,
        )
    hosts = answer["hosts"]
    if not hosts:
        console.print("  no hosts", markup=False)
        return
    console.print(
        f"  {'instance':<21} {'region':<16} {'address':<14} {'state':<12} {'bootstrap':<10} {'ttl':<9} note",
        markup=False,
    )
    for host in hosts:
        done = (
            "done"
            if host["bootstrap_done"]
            else ("exit " + str(host["user_data_exit"]) if host["user_data_exit"] is not None else "-")
        )
        console.print(
            f"  {host['instance_id']:<21} {host['region']:<16} {host['address']:<14} {host['state']:<12} "
            f"{done:<10} {_when(host['ttl_at']):<9} {host['note']}",
            markup=False,
        )


@app.command("hosts")
@handles_errors
def hosts(state_dir: StateDir = None) -> None:
    """Every host the lab made, as JSON."""
    typer.echo(json.dumps(LabClient(_state(state_dir)).hosts_json(), indent=2, sort_keys=True))


@app.command("lose-hosts")
@handles_errors
def lose_hosts(region: Region, state_dir: StateDir = None) -> None:
    """The region's hosts vanish abruptly (processes SIGKILLed, netns deleted); moto still lists them."""
    lost = LabClient(_state(state_dir)).lose_hosts(region)
    console.print(f"lab: {region}: lost {len(lost)} host(s) {' '.join(lost)}", markup=False)


@app.command("fail-apply")
@handles_errors
def fail_apply(
    region: Region,
    message: Annotated[str | None, typer.Option(help="The error message RunInstances returns.")] = None,
    code: Annotated[
        str | None, typer.Option(help="The EC2 error code (InsufficientInstanceCapacity).")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="RunInstances in the region works again.")] = False,
    state_dir: StateDir = None,
) -> None:
    """RunInstances in the region fails with an AWS-style error until cleared."""
    client = LabClient(_state(state_dir))
    if clear:
        client.clear_fail_apply(region)
        console.print(f"lab: {region}: RunInstances works again", markup=False)
        return
    answer = client.fail_apply(region, message, code)
    console.print(
        f"lab: {region}: RunInstances fails with {answer['code']}: {answer['message']}", markup=False
    )


@app.command("latency")
@handles_errors
def latency(
    region: Region,
    ms: Annotated[float, typer.Option("--ms", min=0, help="Added round trip, ms.")],
    jitter: Annotated[float, typer.Option("--jitter", min=0, help="± jitter, ms.")] = 0.0,
    state_dir: StateDir = None,
) -> None:
    """Change a region's added round trip to the target."""
    LabClient(_state(state_dir)).set_latency(region, ms, jitter)
    console.print(f"lab: {region}: +{ms:g} ms (± {jitter:g})", markup=False)


@app.command("cut")
@handles_errors
def cut(region: Region, state_dir: StateDir = None) -> None:
    """The region loses the target (its proxy stops and drops its connections)."""
    LabClient(_state(state_dir)).cut(region)
    console.print(f"lab: {region}: cut from the target", markup=False)


@app.command("restore")
@handles_errors
def restore(region: Region, state_dir: StateDir = None) -> None:
    """Undo `cut`."""
    LabClient(_state(state_dir)).restore(region)
    console.print(f"lab: {region}: reaches the target again", markup=False)
