"""Terraform for one run's fleet: a working directory with its own local state, and the commands in it.

`TerraformWorkspace` writes `main.tf` (from `config.root_config`) and a Terraform CLI config
file, then runs `init`, `apply`, `destroy` and `output` as child processes. Apply and destroy
speak Terraform's machine-readable UI (`-json`): each line is parsed as it arrives and reported to
a `progress(region, event, detail)` callback, so one terminal line can say which region is doing
what; every `progress_period_s` (10 s), even while Terraform prints nothing, a `resources` event
per region says how many resources are created (destroyed) out of planned, and for how long.

What Terraform gets is kept to what it needs. Its environment is built from an allow-list
(`terraform_env`): credentials, profile, region and config-file settings of AWS, Terraform's own
settings, proxies and CA bundles, never spike's tokens. It runs with umask 077, and after every
command the working directory is made 0700 and every file in it 0600: the state holds the
fleet's addresses and the public key, and the logs what Terraform said about them.

Interruption is built on Terraform's own: on SIGINT it starts nothing new, cancels the API calls
in flight, saves its state and exits; a second SIGINT abandons the state. So Terraform runs in
its own session (a Ctrl-C at the terminal reaches spike only), writes its output to a file rather
than a pipe (it never blocks on, or dies with, its reader), and `terminate()` sends it exactly one
SIGINT and waits. Whatever stops the caller while Terraform runs (Ctrl-C, an exception in the
callback) goes through `terminate()` first, so the state on disk is complete and `destroy` can run
next. If spike itself is killed, Terraform finishes on its own and still saves its state.

One gap in Terraform's stop is closed here: a create call cancelled after AWS acted on it but
before the answer arrived (RunInstances, CreateSecurityGroup, ImportKeyPair) leaves a resource
that exists but is not in the state, so destroy cannot see it (seen against moto: a running,
tagged instance left behind). `terminate()` therefore waits, at most `settle_max_s`, until every
create that Terraform announced has been under way for `settle_s` (its create call has returned;
what remains is waiting, which is safe to cancel: the id is already in the state) and nothing has
started or finished for a moment; only then does it send SIGINT. The TTL shutdown on every
injector and the tag-based reaper cover what still escapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadorch.errors import InfrastructureError, PreflightError, RunInterrupted
from loadorch.process import Command, spawn
from loadorch.providers.terraform.config import FleetSpec, render_root_config
from loadorch.providers.terraform.hardening import (
    make_private,
    private_command,
    terraform_env,
    write_private,
)
from loadorch.providers.terraform.inventory import Inventory, inventory_from_outputs
from loadorch.providers.terraform.ui import (
    RESOURCES_EVENT,
    Diagnostic,
    ResourceTally,
    UiEvent,
    UiStream,
)

ProgressCallback = Callable[[str, str, str], None]
"""progress(region, event, detail): `region` is a region code or ALL_REGIONS, `event` Terraform's
message type (apply_start, apply_progress, apply_complete, apply_errored, diagnostic,
change_summary, ...), "log" for plain output, or RESOURCES_EVENT ("resources") for the periodic
count ("3/7 created (25 s)", see `ResourceTally.report`); `detail` a one-line description."""

CONFIG_FILE = "main.tf"
LEGACY_CONFIG_FILE = "main.tf.json"  # what spike wrote before main.tf; still destroyed from
CLI_CONFIG_FILE = "terraform.rc"
STATE_FILE = "terraform.tfstate"
PROGRESS_PERIOD_S = 10.0
# Go's GC target for Terraform and the AWS provider unless the environment sets GOGC: 400 cuts
# the CPU of every command by about a third (`terraform validate`: 12.1 -> 8.1 s user, 450 ->
# 710 MB), the price being memory this kind of machine has
TERRAFORM_GOGC = "400"
_TAIL_POLL_S = 0.05
# After a create started or finished, how long nothing must happen before SIGINT is safe.
_QUIET_S = 0.5


@dataclass(frozen=True)
class TerraformRun:
    """One finished Terraform command: what ran, how it ended and how long the process lived."""

    verb: str
    returncode: int
    elapsed_s: float
    interrupted: bool = False
    summary: str = ""


class TerraformApplyError(InfrastructureError):
    """`terraform apply` or `destroy` failed; `regions` names where, `diagnostics` says why."""

    def __init__(
        self, message: str, *, regions: list[str], diagnostics: list[Diagnostic], where: str, fix: str
    ) -> None:
        self.regions = regions
        self.diagnostics = diagnostics
        super().__init__(message, where=where, fix=fix)


def find_plugin_mirror() -> Path | None:
    """The root of a filesystem mirror holding hashicorp/aws on this machine, if there is one."""
    from loadorch.doctor import terraform_aws_provider_mirrors  # doctor reads the whole machine

    mirrors = terraform_aws_provider_mirrors()
    if not mirrors:
        return None
    # .../registry.terraform.io/hashicorp/aws/<version>/linux_amd64 -> the directory above the host
    return Path(mirrors[-1]).parents[4]


def cli_config_text(plugin_mirror: Path | None, plugin_cache_dir: Path | None) -> str:
    """A Terraform CLI config: install hashicorp/* from the mirror when there is one (no network)."""
    lines = []
    if plugin_mirror is not None:
        lines += [
            "provider_installation {",
            "  filesystem_mirror {",
            f"    path    = {json.dumps(str(plugin_mirror))}",
            '    include = ["registry.terraform.io/hashicorp/*"]',
            "  }",
            "}",
        ]
    if plugin_cache_dir is not None:
        lines.append(f"plugin_cache_dir = {json.dumps(str(plugin_cache_dir))}")
    return "\n".join(lines) + "\n"


class TerraformWorkspace:
    """One run's Terraform working directory: configuration, CLI config, providers and local state.

    `env` is added to what this process's environment holds of `terraform_env`'s allow-list, for
    every Terraform command; it is where AWS credentials go (AWS_ACCESS_KEY_ID, AWS_PROFILE, ...),
    never into a file. With no `plugin_mirror` the machine's mirror is used if `spike doctor`
    finds one, else Terraform downloads the provider into `plugin_cache_dir`. Apply and destroy
    report resource counts every `progress_period_s`.
    """

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        *,
        terraform: str = "terraform",
        plugin_mirror: Path | None = None,
        plugin_cache_dir: Path | None = None,
        parallelism: int = 20,
        lock_timeout_s: int = 120,
        settle_s: float = 3.0,
        settle_max_s: float = 30.0,
        progress_period_s: float = PROGRESS_PERIOD_S,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.env = dict(env)
        self.terraform = terraform
        self.plugin_mirror = plugin_mirror if plugin_mirror is not None else find_plugin_mirror()
        self.plugin_cache_dir = plugin_cache_dir
        self.parallelism = parallelism
        self.lock_timeout_s = lock_timeout_s
        self.settle_s = settle_s
        self.settle_max_s = settle_max_s
        self.progress_period_s = progress_period_s
        self.runs: list[TerraformRun] = []
        self._lock = threading.Lock()
        self._running: _Running | None = None

    # -- files ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    def has_config(self) -> bool:
        """A configuration was written here (main.tf, or main.tf.json by an older spike)."""
        return self.config_path.is_file() or (self.workdir / LEGACY_CONFIG_FILE).is_file()

    def write_config(self, spec: FleetSpec) -> Path:
        """Validate `spec` and write main.tf and the CLI config (0600, in a 0700 directory);
        nothing talks to AWS yet."""
        text = render_root_config(spec)  # validates first: a bad spec writes nothing
        if not (spec.module_source / "main.tf").is_file():
            raise PreflightError(
                f"the injector-fleet module is not at {spec.module_source}",
                where="module_source",
                fix="run spike from its repository checkout or set SPIKE_TERRAFORM_MODULE",
            )
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(self.workdir)
        # Terraform would read both, and find every block declared twice.
        (self.workdir / LEGACY_CONFIG_FILE).unlink(missing_ok=True)
        write_private(self.config_path, text)
        self._write_cli_config()
        return self.config_path

    def _write_cli_config(self) -> None:
        if self.plugin_cache_dir is not None:
            self.plugin_cache_dir.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(
            self.workdir / CLI_CONFIG_FILE, cli_config_text(self.plugin_mirror, self.plugin_cache_dir)
        )

    # -- commands (values tests can inspect) -------------------------------------------------------

    def _command(self, *args: str) -> Command:
        return Command(
            argv=(self.terraform, *args),
            cwd=self.workdir,
            env={
                **self.env,
                "TF_CLI_CONFIG_FILE": str(self.workdir / CLI_CONFIG_FILE),
                "TF_DATA_DIR": str(self.workdir / ".terraform"),
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",  # no version check calls to HashiCorp
                # Terraform and its providers (which inherit it) spend a third of their CPU
                # collecting garbage while they load the AWS provider's schema, every command
                "GOGC": os.environ.get("GOGC", TERRAFORM_GOGC),
            },
        )

    def init_command(self) -> Command:
        return self._command("init", "-input=false", "-no-color")

    def apply_command(self) -> Command:
        return self._command(
            "apply",
            "-auto-approve",
            "-input=false",
            "-json",
            f"-parallelism={self.parallelism}",
            f"-lock-timeout={self.lock_timeout_s}s",
        )

    def destroy_command(self) -> Command:
        # No refresh first (a whole walk of provider start-ups): what is gone already is
        # deleted without complaint, and the leftover check after destroy verifies the account.
        return self._command(
            "destroy",
            "-auto-approve",
            "-input=false",
            "-refresh=false",
            "-json",
            f"-parallelism={self.parallelism}",
            f"-lock-timeout={self.lock_timeout_s}s",
        )

    def output_command(self) -> Command:
        return self._command("output", "-json", "-no-color")

    # -- running -------------------------------------------------------------------------------

    def init(self) -> TerraformRun:
        """`terraform init`: install the provider from the mirror and copy the module in."""
        if not (self.workdir / CLI_CONFIG_FILE).is_file():
            self._write_cli_config()
        stream = UiStream()
        run = self._run("init", self.init_command(), stream, None)
        if run.returncode != 0:
            raise InfrastructureError(
                f"terraform init failed in {self.workdir}: {' | '.join(stream.plain_tail)}",
                where=str(self.workdir),
                fix="run `spike doctor`: terraform and the hashicorp/aws provider (or network access to the registry) are needed",
            )
        return run

    def apply(self, progress: ProgressCallback | None = None) -> TerraformRun:
        """`terraform apply`: create the fleet. A failure names its region(s); state keeps what exists."""
        return self._change("apply", self.apply_command(), progress)

    def destroy(self, progress: ProgressCallback | None = None) -> TerraformRun:
        """`terraform destroy`: remove everything in the state, in every region; safe to repeat."""
        if not self.has_config():
            return TerraformRun("destroy", 0, 0.0, summary="nothing to destroy: no configuration")
        if not (self.workdir / ".terraform").is_dir():
            self.init()
        return self._change("destroy", self.destroy_command(), progress)

    def outputs(self) -> dict[str, Any]:
        """`terraform output -json`: every root output as {name: {"value", "type", "sensitive"}}."""
        stream = UiStream()
        sink = self.workdir / "terraform-output.json"
        run = self._run("output", self.output_command(), stream, None, keep=sink)
        text = sink.read_text() if sink.is_file() else ""
        if run.returncode != 0:
            raise InfrastructureError(
                f"terraform output failed in {self.workdir}: {text.strip()[-2000:]}", where=str(self.workdir)
            )
        try:
            parsed = json.loads(text or "{}")
        except json.JSONDecodeError as exc:
            raise InfrastructureError(
                f"terraform output -json did not print JSON: {text[:300]!r}", where=str(self.workdir)
            ) from exc
        if not isinstance(parsed, dict):
            raise InfrastructureError(
                "terraform output -json did not print an object", where=str(self.workdir)
            )
        return parsed

    def inventory(self) -> Inventory:
        """The injectors that exist now, from the root outputs."""
        return inventory_from_outputs(self.outputs(), where=str(self.state_path))

    def terminate(self, grace_s: float = 600.0) -> bool:
        """Stop the running Terraform command the way Terraform wants to be stopped.

        Waits (at most `settle_max_s`) until no create call can be in flight, then sends one
        SIGINT (a second would make Terraform abandon its state) and waits up to `grace_s` for it
        to save its state and exit. Returns False if nothing was running. An interruption of this
        wait sends the SIGINT at once and does not wait. If Terraform outlives `grace_s` it is
        killed and an InfrastructureError says the state may miss resources.
        """
        with self._lock:
            running = self._running
        if running is None or running.stopped.is_set():
            return False
        try:
            running.settle(self.settle_s, self.settle_max_s)
        finally:
            running.interrupt()
        if not running.stopped.wait(grace_s):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGKILL)
            running.stopped.wait(30)
            raise InfrastructureError(
                f"terraform did not stop within {grace_s:.0f} s of SIGINT and was killed; its state may miss resources",
                where=str(self.workdir),
                fix="run destroy, then `spike reap` to find anything tagged with this run id",
            )
        running.drained.wait(10)
        return True

    def terraform_seconds(self) -> float:
        """How long Terraform processes of this workspace ran in total (for overhead figures)."""
        return sum(run.elapsed_s for run in self.runs)

    def _change(self, verb: str, command: Command, progress: ProgressCallback | None) -> TerraformRun:
        stream = UiStream()
        run = self._run(verb, command, stream, progress)
        if run.interrupted:
            raise RunInterrupted(
                f"terraform {verb} was interrupted; Terraform stopped and saved its state in {self.state_path}",
                where=str(self.workdir),
                fix="destroy this workspace to remove whatever was created",
            )
        if run.returncode != 0:
            raise self._failure(verb, stream)
        return run

    def _failure(self, verb: str, stream: UiStream) -> TerraformApplyError:
        regions = stream.failed_regions()
        reasons = [f"[{d.region}] {d.render()}" for d in stream.diagnostics] or list(stream.plain_tail)[-5:]
        where = ", ".join(regions) if regions else "region unknown"
        if verb == "apply":
            fix = "destroy this workspace: it removes what apply created in every region, then fix the cause and run again"
        else:
            fix = "run destroy again; `spike reap` finds whatever carries this run id's tags"
        return TerraformApplyError(
            f"terraform {verb} failed in {where}: "
            + "; ".join(reasons or ["no diagnostic; see the log"])
            + f" (log: {self.workdir / f'terraform-{verb}.log'})",
            regions=regions,
            diagnostics=list(stream.diagnostics),
            where=where,
            fix=fix,
        )

    def _run(
        self,
        verb: str,
        command: Command,
        stream: UiStream,
        progress: ProgressCallback | None,
        *,
        keep: Path | None = None,
    ) -> TerraformRun:
        """Run `command`, its output going to a file in the workdir that a thread follows and parses.

        Progress callbacks run in the calling thread, in the order Terraform wrote the lines; for
        apply and destroy a `resources` report per region follows the plan, every
        `progress_period_s` while Terraform runs, and once more when it has exited.
        """
        if shutil.which(command.argv[0]) is None:
            raise PreflightError(
                f"terraform {command.argv[0]!r} not found", fix="run `spike doctor` to see what is missing"
            )
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log_path = keep or self.workdir / f"terraform-{verb}.log"
        with self._lock:
            if self._running is not None:
                raise InfrastructureError(
                    f"terraform is already running in {self.workdir}", where=str(self.workdir)
                )
            write_private(log_path, "")  # spawn appends nothing to it: it truncates, keeping 0600
            process = spawn(
                private_command(command),
                output=log_path,
                env=process_env(command),
                new_session=True,  # Ctrl-C reaches spike, which stops Terraform gently
                # and if spike itself is killed, Terraform is interrupted (it saves its state)
                on_parent_death=signal.SIGINT,
            )
            # Terraform's time starts once it exists: starting it is spike's own overhead.
            running = self._running = _Running(process, time.monotonic(), log_path, stream)
        tally = ResourceTally(verb) if verb in ("apply", "destroy") and progress is not None else None
        try:
            running.start_threads(verb)
            try:
                self._follow(running, progress, tally)
            except BaseException:
                # Ctrl-C, or the callback failed: stop Terraform first, so that its state is saved.
                self.terminate()
                raise
            running.drained.wait()
        finally:
            with self._lock:
                self._running = None
            make_private(self.workdir)
            if running.stopped.is_set():
                self.runs.append(running.result(verb))
        return self.runs[-1]

    def _follow(
        self, running: _Running, progress: ProgressCallback | None, tally: ResourceTally | None
    ) -> None:
        """Hand every event to `progress`; with a tally, report the counts on time in between."""
        next_report = running.started + self.progress_period_s
        while True:
            now = time.monotonic()
            if tally is not None and now >= next_report:
                _report(progress, tally, now - running.started)
                next_report = now + self.progress_period_s
            try:
                event = running.events.get(timeout=max(0.0, next_report - now) if tally else None)
            except queue.Empty:
                continue
            if event is None:
                break
            if progress is not None:
                progress(event.region, event.event, event.detail)
            if tally is not None and tally.feed(event):
                _report(progress, tally, time.monotonic() - running.started)
        if tally is not None and tally.planned_known:
            _report(progress, tally, running.ended - running.started)


def _report(progress: ProgressCallback | None, tally: ResourceTally, elapsed_s: float) -> None:
    if progress is not None:
        for region, detail in tally.report(elapsed_s):
            progress(region, RESOURCES_EVENT, detail)


class _Running:
    """A Terraform process of this workspace: its exit, its parsed output, its creates in flight."""

    def __init__(
        self, process: subprocess.Popen[bytes], started: float, log_path: Path, stream: UiStream
    ) -> None:
        self.process = process
        self.started = started
        self.ended = started
        self.log_path = log_path
        self.stream = stream
        self.interrupted = False
        self.stopped = threading.Event()  # the process has exited
        self.drained = threading.Event()  # ... and every line it wrote has been parsed
        self.events: queue.SimpleQueue[UiEvent | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._creating: dict[str, float] = {}  # resource address -> when its create started
        self._last_change = started  # a create started or finished

    def start_threads(self, verb: str) -> None:
        threading.Thread(target=self._wait, name=f"terraform-{verb}-wait", daemon=True).start()
        threading.Thread(target=self._follow, name=f"terraform-{verb}-follow", daemon=True).start()

    def _wait(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()
        self.stopped.set()

    def _follow(self) -> None:
        try:
            with self.log_path.open("rb") as source:
                partial = b""
                while True:
                    chunk = source.readline()
                    if chunk.endswith(b"\n"):
                        self._line(partial + chunk)
                        partial = b""
                        continue
                    partial += chunk
                    if self.stopped.is_set():
                        # It has exited: whatever is in the file now is all there is.
                        for raw in (partial + source.read()).splitlines():
                            self._line(raw)
                        return
                    self.stopped.wait(_TAIL_POLL_S)
        finally:
            self.drained.set()
            self.events.put(None)

    def _line(self, raw: bytes) -> None:
        event = self.stream.feed(raw.decode("utf-8", errors="replace"))
        if event is None:
            return
        if event.action == "create" and event.address:
            now = time.monotonic()
            with self._lock:
                if event.event == "apply_start":
                    self._creating[event.address] = now
                    self._last_change = now
                elif event.event in ("apply_complete", "apply_errored"):
                    self._creating.pop(event.address, None)
                    self._last_change = now
        self.events.put(event)

    def settled(self, settle_s: float, now: float) -> bool:
        """No create call can be in flight: each announced create is `settle_s` old and nothing has
        started or finished just now (a finish releases the resources that depend on it)."""
        with self._lock:
            recent = [t for t in self._creating.values() if now - t < settle_s]
            return not recent and now - self._last_change >= _QUIET_S

    def settle(self, settle_s: float, settle_max_s: float) -> None:
        deadline = time.monotonic() + settle_max_s
        while not self.stopped.is_set() and time.monotonic() < deadline:
            if self.settled(settle_s, time.monotonic()):
                return
            self.stopped.wait(_TAIL_POLL_S)

    def interrupt(self) -> None:
        with self._lock:
            if self.interrupted or self.stopped.is_set():
                return
            self.interrupted = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGINT)

    def result(self, verb: str) -> TerraformRun:
        returncode = self.process.returncode if self.process.returncode is not None else -1
        return TerraformRun(
            verb, returncode, self.ended - self.started, self.interrupted, self.stream.summary
        )


def process_env(command: Command) -> dict[str, str]:
    """The environment `command` runs with: `terraform_env` of this process's and the command's."""
    return terraform_env(os.environ, command.env)
