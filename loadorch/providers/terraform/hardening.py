"""What Terraform gets to see: an environment built from an allow-list, and private files.

Terraform needs AWS credentials and little else; spike's own secrets (the InfluxDB token, the
Grafana key, ...) live in the same environment and must not reach it, nor its provider, nor a
crash log. Its state holds the fleet's addresses and ids, its logs what it said about them: both
stay readable by this user only.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from loadorch.process import Command

# Terraform's own settings that would change what the built commands do (extra arguments, another
# workspace or data directory), or make it log request bodies and provider internals.
_DROPPED_ENV = frozenset(
    {"TF_LOG", "TF_LOG_CORE", "TF_LOG_PROVIDER", "TF_LOG_PATH", "TF_WORKSPACE", "TF_DATA_DIR", "TF_CLI_ARGS"}
)
_DROPPED_PREFIXES = ("TF_LOG", "TF_CLI_ARGS_")
# What Terraform and the AWS provider read from the environment, and nothing else.
_ALLOWED_ENV = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "CHECKPOINT_DISABLE", "GOGC", "GOMEMLIMIT",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
        "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
        "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SDK_LOAD_CONFIG", "AWS_CA_BUNDLE",
        "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_STS_REGIONAL_ENDPOINTS", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT",
        "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL",
        "AWS_EC2_METADATA_DISABLED", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    }
)  # fmt: skip
# Families: per-service endpoints (as boto3 reads them too), ECS/EKS container credentials,
# Terraform's settings (TF_PLUGIN_CACHE_DIR, TF_TOKEN_<host>, ...; less _DROPPED_ENV).
_ALLOWED_PREFIXES = ("AWS_ENDPOINT_URL_", "AWS_CONTAINER_", "TF_")
# Terraform runs with this umask, so that what it creates (state, backups, lock) is private from
# the start; the sh wrapper execs it, so its pid, signals and exit status are Terraform's own.
_UMASK = 0o077
_UMASK_WRAPPER = ("/bin/sh", "-c", f'umask {_UMASK:03o} && exec "$@"', "terraform")


def terraform_env(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a Terraform process: what `environ` holds of the allow-list, then
    `extra` (the workspace's own settings and credentials given to it), with Terraform's logging
    and extra-argument settings dropped from both. spike's tokens (SPIKE_INFLUX_TOKEN,
    SPIKE_GRAFANA_KEY, ...) and anything else not named here never reach Terraform."""
    env = {key: value for key, value in environ.items() if _allowed(key)}
    env.update({key: value for key, value in extra.items() if not _dropped(key)})
    return env


def _allowed(key: str) -> bool:
    return (key in _ALLOWED_ENV or key.startswith(_ALLOWED_PREFIXES)) and not _dropped(key)


def _dropped(key: str) -> bool:
    return key in _DROPPED_ENV or key.startswith(_DROPPED_PREFIXES)


def private_command(command: Command) -> Command:
    """`command` run under umask 077 (through `sh -c 'umask 077 && exec "$@"'`)."""
    return Command(argv=(*_UMASK_WRAPPER, *command.argv), cwd=command.cwd, env=command.env)


def make_private(workdir: Path) -> None:
    """Directory 0700, every regular file directly in it 0600 (state, backups, plans, logs, lock).

    Not recursive: `.terraform/` holds the provider, which must stay executable; Terraform made it
    under umask 077, and the 0700 directory above it keeps everyone else out anyway.
    """
    if not workdir.is_dir():
        return
    workdir.chmod(0o700)
    for entry in workdir.iterdir():
        with contextlib.suppress(FileNotFoundError):  # a lock file may go away meanwhile
            if entry.is_file() and not entry.is_symlink() and stat.S_IMODE(entry.stat().st_mode) != 0o600:
                entry.chmod(0o600)


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file that is 0600 from its first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)
