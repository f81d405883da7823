"""How spike reaches remote injectors: SSH with pinned host keys (`ssh`, `hostkeys`).

`SshFleet` is the one entry point for remote providers; `hostkeys` turns what an operator or a
cloud console says about a host's keys into the fingerprints the fleet pins.
"""

from loadorch.transport.hostkeys import (
    HostKeyMismatch,
    PinnedHostKeyPolicy,
    fingerprint,
    fingerprint_of_public_key_line,
    generate_client_key,
    parse_console_fingerprints,
)
from loadorch.transport.ssh import (
    KILLED_WITHOUT_STATUS,
    ClockSample,
    CommandResult,
    Deadman,
    Remains,
    SshFleet,
    SshHost,
    TransportError,
)

__all__ = [
    "KILLED_WITHOUT_STATUS",
    "ClockSample",
    "CommandResult",
    "Deadman",
    "HostKeyMismatch",
    "PinnedHostKeyPolicy",
    "Remains",
    "SshFleet",
    "SshHost",
    "TransportError",
    "fingerprint",
    "fingerprint_of_public_key_line",
    "generate_client_key",
    "parse_console_fingerprints",
]
