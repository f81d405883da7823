"""The dead-man lease of remote injectors: how long it lasts, and the thread that keeps it fresh.

Every detached process on a host runs under a lease; `LeaseKeeper` renews it on every host every
`LEASE_RENEW_S`, and a watchdog on the host (transport/remote_scripts.py) stops the run's
processes once the lease is `LEASE_EXPIRES_S` old, so a spike that is killed, or loses a host for
good, never leaves load running against the target.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from loadorch.errors import BadInputError, SpikeError
from loadorch.transport.ssh import SshFleet

#: The dead-man lease: renewed on every host this often while any process of the run may be alive...
LEASE_RENEW_S = 5.0
#: ...and the run's processes on a host are stopped once its lease is this old (on the host's clock).
LEASE_EXPIRES_S = 30.0
#: Between the watchdog's SIGTERM and its SIGKILL.
DEADMAN_GRACE_S = 10.0
#: Environment variables that override the two lease durations (tests use short ones).
LEASE_RENEW_ENV = "SPIKE_LEASE_RENEW_S"
LEASE_EXPIRES_ENV = "SPIKE_LEASE_EXPIRES_S"


def lease_timings(
    renew_s: float | None = None,
    expires_s: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[float, float]:
    """(renew every, expire after) in seconds: arguments first, then the environment, then defaults.

    Without a renewal interval of its own, a shortened lease is renewed three times per expiry.
    """
    environ = os.environ if environ is None else environ

    def read(given: float | None, name: str) -> float | None:
        if given is not None:
            return float(given)
        raw = environ.get(name, "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise BadInputError(
                f"{name}={raw!r} is not a positive number of seconds",
                fix=f"unset it (defaults: {LEASE_RENEW_ENV}={LEASE_RENEW_S:g}, "
                f"{LEASE_EXPIRES_ENV}={LEASE_EXPIRES_S:g}) or give seconds, e.g. {name}=30",
            )
        return value

    expires = read(expires_s, LEASE_EXPIRES_ENV) or LEASE_EXPIRES_S
    renew = read(renew_s, LEASE_RENEW_ENV) or min(LEASE_RENEW_S, expires / 3)
    if renew <= 0 or expires < 2 * renew:
        raise BadInputError(
            f"the dead-man lease would expire after {expires:g} s but be renewed only every {renew:g} s",
            fix=f"make {LEASE_EXPIRES_ENV} at least twice {LEASE_RENEW_ENV} "
            f"(defaults: {LEASE_EXPIRES_S:g} and {LEASE_RENEW_S:g})",
        )
    return renew, expires


class LeaseKeeper:
    """Renews the dead-man lease of every injector it was given, from its own thread.

    Each host is renewed on a worker of its own, so a slow or dead host never delays another's
    renewal, and a renewal still under way is not queued again. A dropped connection is
    reconnected by the transport on the next renewal. Nothing here ever blocks the caller:
    `add` and `stop` return at once (stop waits at most a moment for the thread).
    """

    def __init__(self, fleet: SshFleet, renew_s: float) -> None:
        self.fleet = fleet
        self.renew_s = renew_s
        self.renewed_at: dict[str, float] = {}  # injector -> monotonic time of its last renewal
        self.errors: dict[str, str] = {}  # injector -> why its last renewal failed
        self._workdirs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._under_way: dict[str, Future[None]] = {}
        self._sequence = itertools.count(1)

    def add(self, injector_id: str, workdir: str) -> None:
        """Keep `workdir`'s lease on the injector fresh (the launch has just renewed it)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._workdirs[injector_id] = workdir
            self.renewed_at[injector_id] = time.monotonic()  # every launch renews the lease
            if self._thread is None:
                self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="spike-lease")
                self._thread = threading.Thread(target=self._loop, name="spike-lease", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """No more renewals: from now on each host's watchdog decides (idempotent)."""
        with self._lock:
            self._stopped.set()
            thread, pool = self._thread, self._pool
        if thread is not None:
            thread.join(timeout=1.0)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stopped.wait(self.renew_s):
            with self._lock:
                if self._stopped.is_set() or self._pool is None:
                    return
                for injector_id, workdir in self._workdirs.items():
                    under_way = self._under_way.get(injector_id)
                    if under_way is not None and not under_way.done():
                        continue
                    with contextlib.suppress(RuntimeError):  # the pool shut down meanwhile
                        self._under_way[injector_id] = self._pool.submit(self._renew, injector_id, workdir)

    def _renew(self, injector_id: str, workdir: str) -> None:
        stamp = f"{next(self._sequence)} {time.time():.3f}"
        try:
            self.fleet.renew_lease(injector_id, workdir, stamp)
        except SpikeError as exc:
            self.errors[injector_id] = exc.message
            return
        except Exception as exc:  # a connection torn down under it at teardown
            self.errors[injector_id] = f"{type(exc).__name__}: {exc}"
            return
        self.renewed_at[injector_id] = time.monotonic()
        self.errors.pop(injector_id, None)
