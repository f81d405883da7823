"""Per-region latency for the emulated cloud lab: a real toxiproxy between each region and the target.

tc netem is not available on these kernels, so the distance between a lab region's injectors and
the target comes from user space: one toxiproxy server (github.com/Shopify/toxiproxy, built by
`make toxiproxy`) with one proxy per region. Region i's proxy listens on its edge address
(198.18.i.1, PORT), which that region's hosts resolve the target's name to, and forwards to the
target on (127.0.0.1, PORT).

**Latency** here always means the *round-trip time added to each request*, in milliseconds, as
the target's client sees it. It is applied as two toxiproxy `latency` toxics: half on the
`upstream` stream (client to target: the request arrives later) and the rest on `downstream`
(target to client: the answer comes back later), so a request/response exchange grows by the
whole figure, as it would across a real distance. Jitter is split the same way; each direction
draws uniformly within its ± half, so a round trip varies by at most ± the jitter. toxiproxy
works in whole milliseconds: figures are rounded to the nearest one (halves up) before the split.
What toxiproxy cannot add is the TCP handshake's round trip: the client's connection is accepted
by the local proxy at once; the first request on it pays the latency like every later one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from loadorch.errors import BadInputError, InfrastructureError, PreflightError
from loadorch.process import Command, spawn

TOXIPROXY_VERSION = "2.12.0"  # keep in step with TOXIPROXY_VERSION in the Makefile
BUILD_HINT = (
    "run `make toxiproxy` in spike's checkout (builds toxiproxy-server "
    f"v{TOXIPROXY_VERSION} into .tools/bin from the Go module proxy), or set SPIKE_TOXIPROXY "
    "to a toxiproxy-server binary"
)
API_HOST = "127.0.0.1"
MAX_LATENCY_MS = 10_000.0  # ten seconds between two regions is a typo, not a distance
_REPO = Path(__file__).resolve().parents[2]
_REGION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_BIND_FAILURES = ("address already in use", "cannot assign requested address")


def find_toxiproxy() -> str | None:
    """The toxiproxy-server to run: $SPIKE_TOXIPROXY, then `<repo>/.tools/bin/toxiproxy-server`, then PATH."""
    configured = os.environ.get("SPIKE_TOXIPROXY")
    if configured:
        return configured
    built = _REPO / ".tools" / "bin" / "toxiproxy-server"
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    return shutil.which("toxiproxy-server")


# ---------------------------------------------------------------- the default table

# A tiered model, not measurements: the target is hosted near eu-west-2 (London) and each AWS
# region gets the added round-trip time of its tier. The three anchors are issue 9's (eu-west-2
# 5 ms, us-east-1 40 ms, ap-southeast-1 120 ms); the other tiers keep the real-world order (nearer
# regions answer sooner) on the same compressed scale, so per-region differences show in the
# reports while lab runs stay short.
_TIERS: tuple[tuple[float, str, tuple[str, ...]], ...] = (
    (5.0, "the target's own region", ("eu-west-2",)),
    (15.0, "western Europe", ("eu-central-1", "eu-central-2", "eu-west-1", "eu-west-3")),
    (25.0, "northern and southern Europe", ("eu-north-1", "eu-south-1", "eu-south-2")),
    (40.0, "North America, east", ("ca-central-1", "us-east-1", "us-east-2")),
    (60.0, "Middle East", ("il-central-1", "me-central-1", "me-south-1")),
    (75.0, "North America, west, and Mexico", ("ca-west-1", "mx-central-1", "us-west-1", "us-west-2")),
    (100.0, "South Asia, Africa, South America", ("af-south-1", "ap-south-1", "ap-south-2", "sa-east-1")),
    (
        120.0,
        "East and South-East Asia",
        (
            "ap-east-1",
            "ap-east-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-southeast-1",
            "ap-southeast-3",
            "ap-southeast-5",
            "ap-southeast-7",
        ),
    ),
    (150.0, "Oceania", ("ap-southeast-2", "ap-southeast-4")),
)

DEFAULT_LATENCY_MS: dict[str, float] = {
    region: latency for latency, _, regions in _TIERS for region in regions
}
"""Added round-trip time per request (ms, approximate) for every commercial AWS region, from the
point of view of a target near eu-west-2: 5 ms in eu-west-2 itself, 40 ms to us-east-1, 120 ms to
ap-southeast-1, and tiers in between and beyond by rough distance (see `_TIERS`)."""


# ---------------------------------------------------------------- parsing `--latency`


class Latencies(dict[str, float]):
    """Region -> added round-trip ms, as `parse_latencies` read it; `jitter(region)` is its ± jitter."""

    def __init__(self, latency_ms: dict[str, float], jitter_ms: dict[str, float] | None = None) -> None:
        super().__init__(latency_ms)
        self.jitter_ms: dict[str, float] = dict(jitter_ms or {})

    def jitter(self, region: str) -> float:
        """The ± jitter given for `region` (0.0 where none was)."""
        return self.jitter_ms.get(region, 0.0)


_ITEM_HELP = "write REGION=MS[/JITTER], e.g. eu-west-2=5,us-east-1=40/5 (ms; a trailing 'ms' is fine)"


def _milliseconds(text: str, item: str, what: str) -> float:
    value = text.strip()
    if value.lower().endswith("ms"):
        value = value[:-2].strip()
    try:
        number = float(value)
    except ValueError:
        raise BadInputError(
            f"{what} {text.strip()!r} in latency item {item!r} is not a number of milliseconds",
            where="--latency",
            fix=_ITEM_HELP,
        ) from None
    if not math.isfinite(number) or number < 0 or number > MAX_LATENCY_MS:
        raise BadInputError(
            f"{what} {text.strip()!r} in latency item {item!r} is outside 0..{MAX_LATENCY_MS:.0f} ms",
            where="--latency",
            fix=f"give a delay between 0 and {MAX_LATENCY_MS:.0f} ms; {_ITEM_HELP}",
        )
    return number


def parse_latencies(text: str) -> Latencies:
    """Read "eu-west-2=5,us-east-1=40/5" into {region: added round-trip ms}.

    Each comma-separated item is `REGION=MS`, optionally `REGION=MS/JITTER` (± jitter, ms); either
    number may end in `ms`. Regions must be AWS regions (`DEFAULT_LATENCY_MS`), each named once;
    the jitter cannot exceed its latency. The result is a plain dict of latencies whose
    `jitter(region)` gives the jitter. Raises `BadInputError` naming the bad item and the fix.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise BadInputError("no latencies given", where="--latency", fix=_ITEM_HELP)
    latency_ms: dict[str, float] = {}
    jitter_ms: dict[str, float] = {}
    for item in items:
        if not item:
            raise BadInputError(
                f"empty item in {text.strip()!r} (two commas in a row, or a trailing comma)",
                where="--latency",
                fix=_ITEM_HELP,
            )
        region, sep, value = item.partition("=")
        region = region.strip()
        if not sep or not region or not value.strip():
            raise BadInputError(f"latency item {item!r} is not REGION=MS", where="--latency", fix=_ITEM_HELP)
        if region not in DEFAULT_LATENCY_MS:
            raise BadInputError(
                f"unknown region {region!r} in latency item {item!r}",
                where="--latency",
                fix=f"use AWS region names: {', '.join(sorted(DEFAULT_LATENCY_MS))}",
            )
        if region in latency_ms:
            raise BadInputError(
                f"region {region!r} is given twice (again in {item!r})",
                where="--latency",
                fix="name each region once",
            )
        delay, slash, spread = value.partition("/")
        latency = _milliseconds(delay, item, "latency")
        jitter = _milliseconds(spread, item, "jitter") if slash else 0.0
        if jitter > latency:
            raise BadInputError(
                f"jitter {jitter:g} ms exceeds latency {latency:g} ms in latency item {item!r}",
                where="--latency",
                fix="keep the jitter at or below the latency (a delay cannot be negative), e.g. 40/5",
            )
        latency_ms[region] = latency
        if slash:
            jitter_ms[region] = jitter
    return Latencies(latency_ms, jitter_ms)


def split_round_trip(total_ms: float) -> tuple[int, int]:
    """(upstream, downstream) whole milliseconds that add up to `total_ms` rounded half up."""
    whole = math.floor(total_ms + 0.5)
    upstream = whole // 2
    return upstream, whole - upstream


# ---------------------------------------------------------------- the toxiproxy server


@dataclass(frozen=True)
class RegionProxy:
    """One region's proxy as toxiproxy reports it."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    latency_ms: float  # upstream + downstream latency toxics
    jitter_ms: float


def _check_endpoint(endpoint: tuple[str, int], what: str, region: str, *, port_zero_ok: bool) -> str:
    host, port = endpoint
    lowest = 0 if port_zero_ok else 1
    if not isinstance(host, str) or not host or not isinstance(port, int) or not lowest <= port <= 65535:
        raise BadInputError(
            f"region {region!r}: {what} address {endpoint!r} is not (host, port)",
            fix=f"give an IPv4 address and a port {lowest}..65535, e.g. ('198.18.1.1', 8080)",
        )
    return f"{host}:{port}"


def _check_delay(region: str, latency_ms: float, jitter_ms: float) -> None:
    for what, value in (("latency", latency_ms), ("jitter", jitter_ms)):
        if not math.isfinite(value) or not 0 <= value <= MAX_LATENCY_MS:
            raise BadInputError(
                f"region {region!r}: {what} {value!r} ms is outside 0..{MAX_LATENCY_MS:.0f} ms",
                fix="give a delay in milliseconds, e.g. 40",
            )
    if jitter_ms > latency_ms:
        raise BadInputError(
            f"region {region!r}: jitter {jitter_ms:g} ms exceeds latency {latency_ms:g} ms",
            fix="keep the jitter at or below the latency",
        )


def _free_api_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((API_HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class LatencyProxy:
    """A toxiproxy-server on 127.0.0.1 with one latency proxy per lab region.

    `start()` runs the binary (`find_toxiproxy()` unless given) with its API on a free loopback
    port and its log in `state_dir/toxiproxy.log`; the kernel kills it when the *thread* that
    called `start()` ends (PR_SET_PDEATHSIG), so call it from a thread that lives as long as the
    proxies should (a daemon's main thread). Every method speaks toxiproxy's HTTP API.
    """

    def __init__(self, state_dir: Path, binary: str | None = None, *, start_timeout_s: float = 15.0) -> None:
        self.state_dir = Path(state_dir)
        self.binary = binary
        self.start_timeout_s = start_timeout_s
        self.log_file = self.state_dir / "toxiproxy.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._api_url: str | None = None
        # No proxy settings from the environment: the API is on loopback, always reached directly.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -------------------------------------------------------- lifecycle

    @property
    def api_url(self) -> str:
        """http://127.0.0.1:PORT of the running server's API."""
        if self._api_url is None:
            raise InfrastructureError(
                "the latency proxy is not running", fix="call LatencyProxy.start() first"
            )
        return self._api_url

    @property
    def pid(self) -> int | None:
        """The toxiproxy-server process id while it runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Run toxiproxy-server and wait until its API answers; a second call does nothing."""
        if self._process is not None:
            return self
        binary = self.binary or find_toxiproxy()
        if binary is None:
            raise PreflightError(
                "toxiproxy-server is not installed (the lab's per-region latency)", fix=BUILD_HINT
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between the check and toxiproxy's bind; then try another.
        for attempt in range(3):
            port = _free_api_port()
            process = spawn(
                Command((binary, "-host", API_HOST, "-port", str(port))),
                output=self.log_file,
                append=attempt > 0 or self.log_file.exists(),
                on_parent_death=signal.SIGKILL,
                # warn: one line per accepted connection (the info level) would grow with the load.
                env={**os.environ, "LOG_LEVEL": "warn"},
                what="toxiproxy-server",
            )
            url = f"http://{API_HOST}:{port}"
            try:
                started = self._wait_for_api(process, url, binary)
            except BaseException:
                _stop(process)
                raise
            if started:
                self._process, self._api_url = process, url
                (self.state_dir / "toxiproxy.pid").write_text(f"{process.pid}\n", encoding="utf-8")
                return self
            _stop(process)
        raise InfrastructureError(
            f"toxiproxy-server could not bind an API port on {API_HOST} in 3 tries; last log lines:\n"
            f"{_tail(self.log_file)}",
            where=str(self.log_file),
            fix="free some loopback ports (`ss -ltn` lists them) and start the lab again",
        )

    def _wait_for_api(self, process: subprocess.Popen[bytes], url: str, binary: str) -> bool:
        """True once GET /version answers; False if the port was taken; raises on anything else."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = process.poll()
            if code is not None:
                raise InfrastructureError(
                    f"toxiproxy-server exited with code {code} during start-up; last log lines:\n"
                    f"{_tail(self.log_file)}",
                    where=str(self.log_file),
                    fix=f"check the binary (`{binary} -version` should print {TOXIPROXY_VERSION}); {BUILD_HINT}",
                )
            try:
                with self._opener.open(f"{url}/version", timeout=1.0) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            # toxiproxy logs a failed API bind and keeps running without an API.
            if "address already in use" in _tail(self.log_file, 5):
                return False
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"toxiproxy-server did not answer {url}/version within {self.start_timeout_s:.0f} s; "
                    f"last log lines:\n{_tail(self.log_file)}",
                    where=str(self.log_file),
                    fix="the machine may be overloaded; try again, or raise start_timeout_s",
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL): every proxy and connection goes with it."""
        process, self._process, self._api_url = self._process, None, None
        if process is not None:
            _stop(process)
        (self.state_dir / "toxiproxy.pid").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -------------------------------------------------------- regions

    def add_region(
        self,
        name: str,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        latency_ms: float,
        jitter_ms: float = 0.0,
    ) -> None:
        """Listen on `listen` and forward to `upstream`, each request's round trip `latency_ms` longer.

        Port 0 in `listen` lets toxiproxy pick one (`region(name).listen` tells which).
        """
        if not _REGION_NAME.match(name or ""):
            raise BadInputError(
                f"region name {name!r} cannot name a proxy", fix="use letters, digits, '.', '_', '-'"
            )
        listen_text = _check_endpoint(listen, "listen", name, port_zero_ok=True)
        upstream_text = _check_endpoint(upstream, "upstream", name, port_zero_ok=False)
        _check_delay(name, latency_ms, jitter_ms)
        if name in self._proxies():
            raise BadInputError(
                f"region {name!r} already has a latency proxy",
                fix="change it with set_latency(), or pick another name",
            )
        status, answer = self._call(
            "POST",
            "/proxies",
            {"name": name, "listen": listen_text, "upstream": upstream_text, "enabled": True},
        )
        if status >= 300:
            message = _api_message(answer)
            if any(failure in message for failure in _BIND_FAILURES):
                raise PreflightError(
                    f"region {name!r}: the latency proxy cannot listen on {listen_text}: {message}",
                    fix=(
                        "the address must exist on this machine (the lab's bridge carries the edge "
                        f"addresses) and the port must be free: `ss -ltnp 'sport = :{listen[1]}'` names "
                        "whatever holds it"
                    ),
                )
            raise self._refused("create the proxy for region " + repr(name), status, answer)
        try:
            for stream in ("upstream", "downstream"):
                self._put_toxic(name, stream, latency_ms, jitter_ms, create=True)
        except BaseException:
            with contextlib.suppress(InfrastructureError):
                self._call("DELETE", f"/proxies/{name}")
            raise

    def set_latency(self, name: str, latency_ms: float, jitter_ms: float = 0.0) -> None:
        """Change a region's added round trip; open connections get it for their next bytes."""
        _check_delay(name, latency_ms, jitter_ms)
        self._known(name)
        for stream in ("upstream", "downstream"):
            self._put_toxic(name, stream, latency_ms, jitter_ms, create=False)

    def cut(self, name: str) -> None:
        """The region loses the target: its proxy stops listening (new connections are refused) and
        closes the connections it carries. Its latency stays configured for `restore`."""
        self._enable(name, False)

    def restore(self, name: str) -> None:
        """Undo `cut`: the region reaches the target again, with the latency it had."""
        self._enable(name, True)

    def regions(self) -> dict[str, float]:
        """{region: added round-trip ms} as toxiproxy applies it (whole ms), cut regions included."""
        return {name: proxy.latency_ms for name, proxy in self._proxies().items()}

    def region(self, name: str) -> RegionProxy:
        """One region's proxy: addresses, whether it is cut (not enabled), latency and jitter."""
        return self._known(name)

    # -------------------------------------------------------- toxiproxy's HTTP API

    def _put_toxic(
        self, name: str, stream: str, latency_ms: float, jitter_ms: float, *, create: bool
    ) -> None:
        up_latency, down_latency = split_round_trip(latency_ms)
        up_jitter, down_jitter = split_round_trip(jitter_ms)
        upstream = stream == "upstream"
        attributes = {
            "latency": up_latency if upstream else down_latency,
            "jitter": up_jitter if upstream else down_jitter,
        }
        toxic = f"latency_{stream}"
        if create:
            body = {
                "name": toxic,
                "type": "latency",
                "stream": stream,
                "toxicity": 1.0,
                "attributes": attributes,
            }
            status, answer = self._call("POST", f"/proxies/{name}/toxics", body)
        else:
            status, answer = self._call(
                "PATCH", f"/proxies/{name}/toxics/{toxic}", {"attributes": attributes}
            )
        if status >= 300:
            raise self._refused(f"set the {stream} latency of region {name!r}", status, answer)

    def _enable(self, name: str, enabled: bool) -> None:
        self._known(name)
        status, answer = self._call("PATCH", f"/proxies/{name}", {"enabled": enabled})
        if status >= 300:
            raise self._refused(f"{'restore' if enabled else 'cut'} region {name!r}", status, answer)

    def _known(self, name: str) -> RegionProxy:
        proxies = self._proxies()
        if name not in proxies:
            raise BadInputError(
                f"the latency proxy has no region {name!r}",
                fix=f"add it with add_region() first; it has: {', '.join(sorted(proxies)) or 'none'}",
            )
        return proxies[name]

    def _proxies(self) -> dict[str, RegionProxy]:
        status, answer = self._call("GET", "/proxies")
        if status >= 300 or not isinstance(answer, dict):
            raise self._refused("list the proxies", status, answer)
        found = {}
        for name, proxy in answer.items():
            toxics = [t for t in proxy.get("toxics") or [] if t.get("type") == "latency"]
            attributes = [t.get("attributes") or {} for t in toxics]
            found[name] = RegionProxy(
                name=name,
                listen=str(proxy.get("listen", "")),
                upstream=str(proxy.get("upstream", "")),
                enabled=bool(proxy.get("enabled")),
                latency_ms=float(sum(a.get("latency", 0) for a in attributes)),
                jitter_ms=float(sum(a.get("jitter", 0) for a in attributes)),
            )
        return found

    def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON or None); raises InfrastructureError only when nothing answers."""
        url = f"{self.api_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=10.0) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            alive = self._process is not None and self._process.poll() is None
            raise InfrastructureError(
                f"toxiproxy's API at {self.api_url} did not answer {method} {path}: {reason}"
                + ("" if alive else f" (toxiproxy-server is gone; last log lines:\n{_tail(self.log_file)})"),
                where=str(self.log_file),
                fix="stop and start the lab's latency proxy again",
            ) from None
        try:
            return status, json.loads(raw) if raw.strip() else None
        except ValueError:
            return status, {"error": raw.decode("utf-8", "replace")}

    def _refused(self, action: str, status: int, answer: Any) -> InfrastructureError:
        return InfrastructureError(
            f"toxiproxy refused to {action} ({status}: {_api_message(answer)})",
            where=str(self.log_file),
            fix="see toxiproxy's log; a proxy it lost is re-added by restarting the lab",
        )


def _api_message(answer: Any) -> str:
    if isinstance(answer, dict) and "error" in answer:
        return str(answer["error"])
    return json.dumps(answer)[:200]


def _stop(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5.0)
