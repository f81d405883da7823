"""Each region reaches the target through its own latency proxy (real toxiproxy), by one name.

The target is a tiny HTTP server on 127.0.0.1; the hosts ask for http://target.spike-lab.test:PORT,
which their /etc/hosts maps to their region's edge address, where the region's proxy listens.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ec2, free_port, wait_for

from loadorch.lab.control import Lab
from loadorch.lab.state import LabSettings
from loadorch.transport.connection import SshHost
from loadorch.transport.hostkeys import parse_console_fingerprints
from loadorch.transport.ssh import SshFleet

NEAR_MS, FAR_MS = 5.0, 150.0
PROBE = """python3 - <<'EOF'
import statistics, time, urllib.request
samples = []
for _ in range(9):
    started = time.monotonic()
    with urllib.request.urlopen("http://target.spike-lab.test:{port}/", timeout=10) as answer:
        assert answer.read() == b"hello from the target"
    samples.append((time.monotonic() - started) * 1000)
print(round(statistics.median(samples), 1))
EOF"""


class _Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the target"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def latency_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    from loadorch.lab.latency import find_toxiproxy

    if find_toxiproxy() is None:
        print("\nlab latency test skipped: toxiproxy-server is not built (`make toxiproxy`)")
        pytest.skip("toxiproxy-server is not built (`make toxiproxy`)")
    settings = LabSettings(
        state_dir=tmp_path_factory.mktemp("lab") / "state",
        port=free_port(),
        regions=("eu-west-2", "us-east-1"),
        latency_ms={"eu-west-2": NEAR_MS, "us-east-1": FAR_MS},
        target_port=free_port(),
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", settings.target_port), _Target)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with Lab(settings) as lab:
            yield lab
    finally:
        server.shutdown()
        server.server_close()


def test_each_region_reaches_the_target_with_its_own_latency(
    latency_lab: Lab, client_key: tuple[Path, str]
) -> None:
    lab = latency_lab
    regions = {r.name: r for r in lab.info.regions}
    assert (regions["eu-west-2"].latency_ms, regions["us-east-1"].latency_ms) == (NEAR_MS, FAR_MS)
    hosts: list[SshHost] = []
    ids: dict[str, str] = {}
    for region in ("eu-west-2", "us-east-1"):
        client = ec2(lab, region)
        client.import_key_pair(KeyName="k", PublicKeyMaterial=client_key[1].encode())
        instance = client.run_instances(ImageId="ami-1", MinCount=1, MaxCount=1, KeyName="k")["Instances"][0]
        ids[region] = instance["InstanceId"]
        pins = wait_for(
            lambda c=client, i=instance["InstanceId"]: parse_console_fingerprints(
                c.get_console_output(InstanceId=i).get("Output", "")
            ),
            90,
            f"host keys in {region}",
        )
        hosts.append(
            SshHost(
                name=region,
                address=instance["PublicIpAddress"],
                user="ec2-user",
                key_path=client_key[0],
                host_key_fingerprints=pins,
            )
        )
    fleet = SshFleet(hosts, command_timeout_s=60)
    try:
        results = fleet.run(PROBE.format(port=lab.settings.target_port))
        near, far = (float(results[r].stdout.strip()) for r in ("eu-west-2", "us-east-1"))
        print(
            f"\nmedian request from eu-west-2: {near} ms (+{NEAR_MS:g} configured); us-east-1: {far} ms (+{FAR_MS:g})"
        )
        assert far >= FAR_MS * 0.95
        assert near < FAR_MS * 0.5

        lab.client.cut("us-east-1")
        cut = fleet.run(PROBE.format(port=lab.settings.target_port), check=False)
        assert cut["us-east-1"].exit_code != 0 and cut["eu-west-2"].exit_code == 0
        lab.client.restore("us-east-1")
        lab.client.set_latency("us-east-1", 20.0)
        again = float(fleet.run(PROBE.format(port=lab.settings.target_port))["us-east-1"].stdout.strip())
        assert again < FAR_MS * 0.5
    finally:
        fleet.close()
        for region, instance_id in ids.items():
            ec2(lab, region).terminate_instances(InstanceIds=[instance_id])
        lab.client.wait_for_hosts(list(ids.values()), state="terminated", timeout_s=60)
