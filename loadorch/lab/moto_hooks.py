"""moto's EC2, run in the lab's own process, with hooks that turn instances into hosts.

Why moto in-process with hooks, and not a moto extension or a proxy in front of moto:
- A proxy would have to parse and rewrite EC2's query protocol both ways (RunInstances answers,
  DescribeInstances' public IPs in several places, GetConsoleOutput) and keep its own copy of
  which instance has which key pair, user_data and shutdown behaviour. moto holds all of that
  already, as objects, one attribute away.
- moto has no plug-in interface for backends; an "extension" would be a fork or a subclass
  registered by replacing moto's backend dict: the same patching, with more surface.
- In the same process the hooks run inside moto's own calls: the public IP is set on the
  instance before RunInstances answers, so every later answer (Describe*, Terraform's
  `public_ip`) carries the host's lab address without any translation; a host's power-off can
  call moto's own TerminateInstances. The cost is a dependency on three moto internals
  (`EC2Backend.run_instances`, `EC2Backend.terminate_instances`,
  `General.get_console_output`), checked by `install` and by the lab's tests at every run.

The lab's control routes (`/spike-lab/...`, JSON) are served by the same server, in front of
moto's WSGI application; see `control_routes` in `loadorch.lab.daemon`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Protocol

from loadorch.errors import InfrastructureError


class LabHooks(Protocol):
    """What the lab does when moto creates, terminates or shows an instance."""

    def before_run_instances(self, region: str, count: int) -> None:
        """Raise an EC2 error to refuse the call (fail-apply), else return."""

    def instance_created(self, backend: Any, instance: Any) -> str:
        """Make the instance a host; returns its lab address (moto reports it as the public IP)."""

    def instances_terminated(self, instance_ids: list[str]) -> None: ...

    def console_output(self, instance_id: str) -> str:
        """The host's console, empty before it has booted."""


def ec2_error(code: str, message: str) -> Exception:
    """An EC2 error as moto serialises it (HTTP 400, <Code>, <Message>)."""
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def instance_user_data(instance: Any) -> bytes | None:
    """The user_data an instance was launched with, decoded (Terraform and boto3 send base64)."""
    encoded = getattr(instance, "user_data", None)
    if encoded is None:
        return None
    if isinstance(encoded, list):  # older moto kept a list of strings
        encoded = encoded[0] if encoded else None
        if encoded is None:
            return None
    return base64.b64decode(str(encoded))


def instance_public_keys(backend: Any, instance: Any) -> list[str]:
    """The public key of the key pair the instance was launched with (as cloud-init installs it)."""
    name = getattr(instance, "key_name", None)
    pair = backend.key_pairs.get(name) if name else None
    if pair is None:
        return []
    material = pair.material_public
    text = material.decode("utf-8", "replace") if isinstance(material, bytes) else str(material)
    return [line.strip() for line in text.splitlines() if line.strip()]


def set_public_ip(instance: Any, address: str) -> None:
    """Make `address` the instance's public IP wherever moto reports it."""
    for nic in instance.nics.values():
        nic.public_ip = address
        break


_installed: dict[str, Callable[..., Any]] = {}


def install(lab: LabHooks) -> None:
    """Patch moto's EC2 so that `lab` sees every RunInstances, TerminateInstances and GetConsoleOutput."""
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.models import EC2Backend
    from moto.ec2.responses.general import General
    from moto.ec2.utils import Base64EncodedString

    for owner, name in (
        (EC2Backend, "run_instances"),
        (EC2Backend, "terminate_instances"),
        (General, "get_console_output"),
    ):
        if not callable(getattr(owner, name, None)):
            raise InfrastructureError(
                f"this moto has no {owner.__name__}.{name}: the lab cannot hook it",
                fix="install the moto version spike is tested with (`make python-deps`)",
            )
    original_run = _installed.setdefault("run", EC2Backend.run_instances)
    original_terminate = _installed.setdefault("terminate", EC2Backend.terminate_instances)

    def run_instances(backend: Any, image_id: str, count: int, *args: Any, **kwargs: Any) -> Any:
        lab.before_run_instances(backend.region_name, int(count))
        reservation = original_run(backend, image_id, count, *args, **kwargs)
        for instance in reservation.instances:
            set_public_ip(instance, lab.instance_created(backend, instance))
        return reservation

    def terminate_instances(backend: Any, instance_ids: list[str]) -> Any:
        result = original_terminate(backend, instance_ids)
        lab.instances_terminated([instance.id for instance, _previous in result])
        return result

    def get_console_output(response: Any) -> Any:
        instance = response.ec2_backend.get_instance(response._get_param("InstanceId"))
        result: dict[str, Any] = {"InstanceId": instance.id, "Timestamp": utcnow()}
        text = lab.console_output(instance.id)
        if text:  # EC2 leaves Output out until the instance has written to its console
            result["Output"] = Base64EncodedString.from_raw_string(text)
        return ActionResult(result)

    EC2Backend.run_instances = run_instances  # type: ignore[method-assign, assignment]
    EC2Backend.terminate_instances = terminate_instances  # type: ignore[method-assign, assignment]
    General.get_console_output = get_console_output  # type: ignore[method-assign, assignment]
