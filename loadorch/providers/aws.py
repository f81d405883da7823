"""The aws provider: EC2 injectors per region, created with Terraform and destroyed after the run.

Order of things, and why:
1. `preflight` (one AWS call, before anything is built or written): STS GetCallerIdentity proves
   the credentials work (at `--aws-endpoint` if given), and a given operator CIDR is checked.
   `check_plan` (no AWS call): operator CIDR, regions, the run fitting inside the injectors' TTL,
   the estimated cost under `--max-cost`. Bad input is refused before anything exists.
2. The run's root configuration is written into `<run>/terraform/` with its own local state;
   from that moment teardown destroys (armed before apply begins).
3. `terraform apply` in every region at once; a failure anywhere fails the run, and teardown
   destroys every region.
4. Each instance's SSH host key is pinned from its console output, which only EC2 (reached with
   the operator's credentials) can produce: cloud-init prints the keys there at first boot. No
   key is ever trusted on first use.
5. The shared SSH path (`remote.SshFleetProvider`) deploys, runs and collects.
6. Teardown stops the processes, runs `terraform destroy` (Ctrl-C cannot interrupt it), then lists
   every resource still tagged with the run id in every region and reports them loudly.

The private SSH key is generated per run under `<run>/ssh/` (mode 0600) and only its public half
goes into Terraform. Credentials come from the environment (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)
and are never written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loadorch.cloud.aws import AwsAccount, aws_client, current_account, use_account
from loadorch.cloud.capacity import CapacityReport, check_capacity
from loadorch.cloud.identity import check_credentials, detect_operator_cidr
from loadorch.cloud.leftovers import find_run_resources
from loadorch.cloud.pricing import load_prices
from loadorch.errors import BadInputError, InfrastructureError, SpikeError
from loadorch.pacing import Every
from loadorch.plan.cost import CostEstimate, check_budget, check_operator_cidr, check_ttl, estimate_cost
from loadorch.plan.model import Plan
from loadorch.providers.base import Artifacts, InjectorSite, TeardownReport
from loadorch.providers.remote import RemoteHost, SshFleetProvider
from loadorch.providers.terraform.config import (
    DEFAULT_AMI_SSM_PARAMETER,
    AssumeRole,
    FleetSpec,
    RegionFleet,
    injector_fleet_module,
    target_ports_for,
    validate_spec,
)
from loadorch.providers.terraform.inventory import Inventory
from loadorch.providers.terraform.runner import TerraformWorkspace
from loadorch.transport.hostkeys import generate_client_key, parse_console_fingerprints
from loadorch.transport.ssh import SshHost

Progress = Callable[[str, str, str], None]  # region, event, detail
ARM64_AMI_SSM_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"


@dataclass(frozen=True)
class AwsSettings:
    instance_type: str = "c6i.large"
    use_spot: bool = False
    ttl_minutes: int = 120  # every injector powers itself off this long after boot, whatever happens
    operator_cidr: str | None = None  # SSH is allowed from here only; None: this machine's public address
    max_cost_usd: float | None = None
    endpoint: str | None = None  # LocalStack or moto instead of AWS
    owner: str = field(default_factory=getpass.getuser)
    ssh_user: str = "ec2-user"  # Amazon Linux 2023, the module's default image
    base_dir: str = "/opt/spike"  # the module's injector_workdir, made by user_data for the login user
    bootstrap_timeout_s: float = 900.0  # Java install and tuning at first boot
    boot_s: float = 180.0  # boot + Java install, for the cost and TTL estimates
    teardown_s: float = 120.0
    root_gb: int = 20  # the module's root_volume_size_gb: what is created is what is estimated
    allow_wide_operator_cidr: bool = False  # wider than /16 (IPv6 /48) only when forced
    host_key_timeout_s: float = 600.0  # how long to wait for an instance's console to show its host keys
    ssh_boot_wait_s: float = 300.0  # how long a host may still refuse SSH after its keys are known
    account: AwsAccount = field(default_factory=AwsAccount)  # a role to assume, profiles per region
    # what a real account needs, per region where it differs: (region, value) pairs
    instance_types: tuple[tuple[str, str], ...] = ()  # beside instance_type, which is the default
    subnets: tuple[tuple[str, str], ...] = ()  # subnet-... per region (None: a default subnet)
    vpcs: tuple[tuple[str, str], ...] = ()  # vpc-... per region, with its subnet
    ami_id: str | None = None  # a literal image in every region (None: the SSM parameter's)
    public_ip: bool = True  # False: the subnets are reached privately (VPN, peering, a bastion)

    def type_in(self, region: str) -> str:
        return dict(self.instance_types).get(region, self.instance_type)


class AwsProvider(SshFleetProvider):
    name = "aws"

    def __init__(
        self,
        settings: AwsSettings,
        *,
        cache_dir: Path,
        progress: Progress | None = None,
        terraform: str = "terraform",
    ) -> None:
        super().__init__(cache_dir=cache_dir)
        self.settings = settings
        self.boot_wait_s = settings.ssh_boot_wait_s
        self.progress = progress or (lambda region, event, detail: None)
        self.say = self.progress  # the shared SSH path's connect and deploy progress too
        self.terraform = terraform
        self.workspace: TerraformWorkspace | None = None
        self.run_id: str | None = None
        self.regions: tuple[str, ...] = ()
        self.estimate: CostEstimate | None = None
        self.timings: dict[str, float] = {}
        self._clean = True  # False once destroy failed or something tagged with the run remains
        self._destroyed = False  # True once destroy succeeded and the leftovers check found nothing
        self._reattach = False  # recovery: the hosts come from an existing state, nothing is applied
        self.key_file: Path | None = None  # the run's private SSH key, removed once destroy is verified
        self.caller_arn: str | None = None  # who AWS says we are, after `preflight`
        self.capacity_report: CapacityReport | None = None  # the capacity preflight's figures
        self._account_before: AwsAccount | None = None

    # -- before any AWS call -------------------------------------------------------------------

    def operator_cidr(self) -> str:
        if self.settings.operator_cidr is not None:
            return check_operator_cidr(
                self.settings.operator_cidr, force_wide=self.settings.allow_wide_operator_cidr
            )
        if self.settings.endpoint is not None:
            raise BadInputError(
                "with a custom AWS endpoint the operator CIDR cannot be detected",
                fix="give --operator-cidr (e.g. 127.0.0.1/32 for LocalStack or moto)",
            )
        return detect_operator_cidr()

    def fleet_spec(self, plan: Plan, public_key: str, cidr: str) -> FleetSpec:
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=self.settings.ttl_minutes)
        settings, account = self.settings, self.settings.account.for_run(plan.run_id)
        subnets, vpcs = dict(settings.subnets), dict(settings.vpcs)
        return FleetSpec(
            run_id=plan.run_id,
            owner=settings.owner,
            expires_at=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ttl_minutes=settings.ttl_minutes,
            regions=tuple(
                RegionFleet(
                    r.name,
                    len(r.injectors),
                    settings.type_in(r.name),
                    settings.use_spot,
                    vpc_id=vpcs.get(r.name),
                    subnet_id=subnets.get(r.name),
                    ami_id=settings.ami_id,
                    ami_ssm_parameter=self._image_parameter(r.name),
                    associate_public_ip=settings.public_ip,
                    ssh_user=settings.ssh_user,
                )
                for r in plan.regions
            ),
            operator_cidr=cidr,
            ssh_public_key=public_key,
            module_source=injector_fleet_module(),
            endpoint=settings.endpoint,
            root_volume_size_gb=settings.root_gb,
            target_ports=target_ports_for(plan.base_url),
            assume_role=AssumeRole(account.role_arn, account.external_id, account.session_name)
            if account.role_arn
            else None,
            region_profiles=dict(account.region_profiles),
        )

    def _image_parameter(self, region: str) -> str:
        """Amazon Linux 2023 for the instance type's architecture (arm64 for Graviton types)."""
        report = self.capacity_report
        for found in report.regions if report is not None else ():
            if found.region == region and found.architectures and "x86_64" not in found.architectures:
                return ARM64_AMI_SSM_PARAMETER
        return DEFAULT_AMI_SSM_PARAMETER

    def preflight(self) -> None:
        """Cheap checks before anything is built or written: credentials, operator CIDR.

        STS GetCallerIdentity (at `--aws-endpoint` if given) proves that AWS accepts the
        credentials; a given operator CIDR (or its absence with a custom endpoint) is checked
        without any lookup. Nothing is written and no key is made.
        """
        if self.settings.operator_cidr is not None or self.settings.endpoint is not None:
            self.operator_cidr()
        self._account_before = current_account()  # back again after teardown (a process may run more)
        use_account(self.settings.account)  # every AWS call of the run acts in that account
        self.caller_arn = check_credentials(self.settings.endpoint, self.settings.account)

    def check_plan(self, plan: Plan) -> tuple[str, ...]:
        """The plan refused without AWS (regions, CIDR, TTL, budget), then by AWS (type offered,
        vCPU quota), exit 2, before the run directory exists; returns the capacity warnings."""
        self.estimate = self.estimate_plan(plan, self.operator_cidr())
        return self.check_capacity(plan)

    def recovery_details(self) -> dict[str, object]:
        """The endpoint and the account (a role, profiles per region: no secrets) recovery acts in."""
        return {"aws_endpoint": self.settings.endpoint, "aws_account": self.settings.account.to_dict()}

    def estimate_plan(self, plan: Plan, cidr: str = "127.0.0.1/32") -> CostEstimate:
        """Everything about the plan that can be refused without AWS: regions, CIDR, TTL and budget."""
        validate_spec(self.fleet_spec(plan, "ssh-ed25519 AAAA preflight", cidr))
        check_ttl(plan, self.settings.ttl_minutes, self.settings.boot_s, self.settings.teardown_s)
        estimate = estimate_cost(
            plan,
            self.settings.instance_type,
            load_prices(),
            boot_s=self.settings.boot_s,
            teardown_s=self.settings.teardown_s,
            root_gb=self.settings.root_gb,
            use_spot=self.settings.use_spot,
            ttl_minutes=self.settings.ttl_minutes,
            region_types=dict(self.settings.instance_types),
        )
        check_budget(estimate, self.settings.max_cost_usd)
        return estimate

    def check_capacity(self, plan: Plan) -> tuple[str, ...]:
        """AWS's answer about the plan, before anything is created: the instance type is offered in
        every region and the fleet fits the account's vCPU quota (refused, exit 2, if not); returns
        the warnings (a quota that could not be checked)."""
        report = check_capacity(
            {r.name: len(r.injectors) for r in plan.regions},
            {r.name: self.settings.type_in(r.name) for r in plan.regions},
            spot=self.settings.use_spot,
            endpoint=self.settings.endpoint,
        )
        self.capacity_report = report
        return report.warnings

    # -- provisioning --------------------------------------------------------------------------

    def recover_results(
        self, plan: Plan, run_dir: Path, log_names: Sequence[str] = ("console.log", "agent.log")
    ) -> list[str]:
        """After spike died: the hosts from the run's Terraform state (nothing is applied), their
        keys pinned from the console again, then as any SSH host (stop, fetch results)."""
        self._reattach = True
        return super().recover_results(plan, run_dir, log_names)

    def _hosts(self, plan: Plan, run_dir: Path) -> dict[str, RemoteHost]:
        if self._reattach:
            workspace = TerraformWorkspace(run_dir / "terraform", env={}, terraform=self.terraform)
            inventory = workspace.inventory()
            return self._remote_hosts(plan, inventory, run_dir / "ssh" / "id_ed25519")
        cidr = self.operator_cidr()
        if self.estimate is None:  # check_plan (the run's own preflight) estimated it already
            self.estimate = self.estimate_plan(plan, cidr)
        self.run_id = plan.run_id
        self.regions = tuple(r.name for r in plan.regions)
        use_account(self.settings.account.for_run(plan.run_id))  # the role session names the run
        key_file = run_dir / "ssh" / "id_ed25519"
        self.key_file = key_file
        public_key = generate_client_key(key_file)
        spec = self.fleet_spec(plan, public_key, cidr)
        # a profile's own role is assumed by the SDK before the provider's endpoints apply
        sts = {"AWS_ENDPOINT_URL_STS": self.settings.endpoint} if self.settings.endpoint else {}
        self.workspace = TerraformWorkspace(run_dir / "terraform", env=sts, terraform=self.terraform)
        self.workspace.write_config(spec)  # from here on, teardown destroys
        started = time.monotonic()
        self.workspace.init()
        self.workspace.apply(progress=self.progress)
        self.timings["apply_s"] = round(time.monotonic() - started, 3)
        return self._remote_hosts(plan, self.workspace.inventory(), key_file)

    def _remote_hosts(self, plan: Plan, inventory: Inventory, key_file: Path) -> dict[str, RemoteHost]:
        pinned = self._pin_host_keys(inventory)
        hosts = {}
        for host in inventory.hosts:
            hosts[host.injector_id] = RemoteHost(
                ssh=SshHost(
                    name=host.injector_id,
                    address=host.address,
                    user=inventory.region(host.region).ssh_user or self.settings.ssh_user,
                    key_path=key_file,
                    host_key_fingerprints=pinned[host.injector_id],
                ),
                region=host.region,
                base_dir=self.settings.base_dir,
            )
        missing = [i.id for i in plan.injectors if i.id not in hosts]
        if missing:
            raise InfrastructureError(
                f"terraform created no instance for {', '.join(missing)}",
                where=str(run_dir_of(key_file)),
                fix="see terraform's output in the run directory",
            )
        return hosts

    def _pin_host_keys(self, inventory: Inventory) -> dict[str, tuple[str, ...]]:
        """Each instance's host key fingerprints, read from its console output (polled until printed).

        Says how many are pinned at least every 10 s: a console can take minutes to show them.
        """
        pinned: dict[str, tuple[str, ...]] = {}
        deadline = time.monotonic() + self.settings.host_key_timeout_s
        beat = Every()
        total = len(inventory.hosts)
        while True:
            for host in inventory.hosts:
                if host.injector_id in pinned:
                    continue
                client = aws_client("ec2", host.region, self.settings.endpoint)
                try:
                    answer = client.get_console_output(InstanceId=host.instance_id, Latest=True)
                except Exception as exc:  # botocore's errors: retried until the deadline
                    self.progress(host.region, "host-key", f"{host.instance_id}: {exc}")
                    continue
                found = parse_console_fingerprints(_console_text(answer.get("Output", "")))
                if found:
                    pinned[host.injector_id] = found
                    self.progress(host.region, "host-key", f"{host.injector_id} pinned ({found[0]})")
            waiting = [h for h in inventory.hosts if h.injector_id not in pinned]
            if not waiting:
                self.timings["host_keys_s"] = round(beat.elapsed_s, 3)
                self.progress("fleet", "host-keys", f"{total}/{total} pinned in {beat.elapsed_s:.0f} s")
                return pinned
            if beat.due():
                self.progress(
                    "fleet",
                    "host-keys",
                    f"{len(pinned)}/{total} pinned after {beat.elapsed_s:.0f} s; waiting for the consoles of "
                    + ", ".join(h.injector_id for h in waiting[:6])
                    + (" ..." if len(waiting) > 6 else ""),
                )
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    "no SSH host keys in the console output of "
                    + ", ".join(f"{h.injector_id} ({h.instance_id})" for h in waiting)
                    + f" after {self.settings.host_key_timeout_s:.0f} s; refusing to trust an unverified key",
                    where=waiting[0].region,
                    fix="use an image whose cloud-init prints host keys to the console (the module's default "
                    "does), or raise --host-key-timeout",
                )
            time.sleep(min(5.0, max(0.5, self.settings.host_key_timeout_s / 100)))

    def deploy(self, plan: Plan, artifacts: Artifacts, run_dir: Path) -> dict[str, InjectorSite]:
        """Wait for user_data's marker (Java installed, tuning applied), then deploy as any SSH host."""
        self._wait_for_bootstrap()
        return super().deploy(plan, artifacts, run_dir)

    def _wait_for_bootstrap(self) -> None:
        """Until every host's user_data has written its marker; says k/n at least every 10 s."""
        fleet = self._fleet()
        marker = shlex.quote(f"{self.settings.base_dir}/bootstrap-done")
        check = (
            f"if [ -f {marker} ]; then echo done; else tail -n 1 /var/log/spike-bootstrap.log 2>/dev/null; fi"
        )
        beat = Every()
        deadline = time.monotonic() + self.settings.bootstrap_timeout_s
        done: set[str] = set()
        names = fleet.names
        last: dict[str, str] = {}
        while True:
            results = fleet.run({n: check for n in names if n not in done}, timeout_s=30, check=False)
            for name, result in results.items():
                if result.exit_code == 0 and result.stdout.strip() == "done":
                    done.add(name)
                else:
                    last[name] = result.stdout.strip()[-120:]
            if len(done) == len(names):
                self.timings["bootstrap_s"] = round(beat.elapsed_s, 3)
                self.progress(
                    "fleet", "bootstrap", f"{len(names)}/{len(names)} done in {beat.elapsed_s:.0f} s"
                )
                return
            if beat.due():
                self.progress(
                    "fleet",
                    "bootstrap",
                    f"{len(done)}/{len(names)} done after {beat.elapsed_s:.0f} s"
                    + "".join(f"; {n}: {last[n]}" for n in names if n not in done and last.get(n))[:400],
                )
            if time.monotonic() > deadline:
                waiting = [n for n in names if n not in done]
                raise InfrastructureError(
                    f"the bootstrap (user_data) did not finish on {', '.join(waiting)} within "
                    f"{self.settings.bootstrap_timeout_s:.0f} s"
                    + (f"; last line: {last[waiting[0]]}" if last.get(waiting[0]) else ""),
                    where=waiting[0],
                    fix="read /var/log/spike-bootstrap.log on the instance (the package mirrors may be "
                    "unreachable), or raise the bootstrap timeout",
                )
            time.sleep(2.0)

    # -- teardown ------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self._teardown()
        finally:
            if self._account_before is not None:
                use_account(self._account_before)

    def _teardown(self) -> None:
        with _uninterruptible():
            super().teardown()
            if self.workspace is None:
                return
            started = time.monotonic()
            error: str | None = None
            for _attempt in range(2):
                try:
                    self.workspace.destroy(progress=self.progress)
                    error = None
                    break
                except SpikeError as exc:
                    error = exc.render()
            self.timings["destroy_s"] = round(time.monotonic() - started, 3)
            if error is not None:
                self._teardown_notes.append(f"terraform destroy failed: {error}")
                self._clean = False
            self._check_leftovers()
            if self._destroyed and self.key_file is not None:
                forgotten = forget_run_key(self.key_file)
                if forgotten:
                    self._teardown_notes.append(forgotten)

    def _check_leftovers(self) -> None:
        if self.run_id is None:
            return
        try:
            left = find_run_resources(self.run_id, self.regions, self.settings.endpoint)
        except SpikeError as exc:
            self._teardown_notes.append(f"could not list what remains: {exc.message}")
            self._clean = False
            return
        if left:
            self._clean = False
            self._teardown_notes.append(
                f"{len(left)} resource(s) tagged SpikeRunId={self.run_id} remain: "
                + ", ".join(f"{r.region}/{r.kind}/{r.id} ({r.state})" for r in left[:10])
                + f"; remove them with `spike reap --run {self.run_id} --yes`"
            )
        else:
            self._destroyed = self._clean  # destroy itself succeeded too
            self._teardown_notes.append(
                f"terraform destroyed the fleet; nothing tagged SpikeRunId={self.run_id} remains in "
                f"{', '.join(self.regions)}"
            )

    def teardown_report(self) -> TeardownReport:
        report = super().teardown_report()
        details = dict(report.details)
        details["terraform"] = dict(self.timings)
        if self.estimate is not None:
            details["cost_estimate"] = self.estimate.to_dict()
        if self.capacity_report is not None:
            details["capacity"] = self.capacity_report.to_dict()
        summary, clean = report.summary, report.clean and self._clean
        if not report.clean and self._clean and self._destroyed:
            # a host that could not be checked (lost, unreachable) is terminated now: every instance
            # of the run is gone (destroy, then nothing tagged left), and its processes with it
            summary += "; those hosts' instances are terminated, so nothing of the run runs there any more"
            clean = True
        return TeardownReport(summary, clean=clean, details=details)


def forget_run_key(key_file: Path) -> str:
    """Remove the run's private SSH key (and its public half): every host it opened is gone."""
    removed = [p for p in (key_file, key_file.with_name(key_file.name + ".pub")) if p.is_file()]
    for path in removed:
        path.unlink()
    return "the run's SSH key is removed (every instance it opened is terminated)" if removed else ""


def run_dir_of(key_file: Path) -> Path:
    """The run directory of the run's SSH key (`<run>/ssh/id_ed25519`)."""
    return key_file.parent.parent


def _console_text(output: str) -> str:
    """EC2 returns the console base64-encoded; some emulators return it as plain text."""
    try:
        return base64.b64decode(output, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return output


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM cannot stop a destroy half-way (Terraform runs in its own session)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
