import socket

import pytest

from loadorch.errors import PreflightError, TargetRefusedError
from loadorch.preflight import check_port_free, check_target_allowed, check_target_reachable, is_loopback_host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.9.8.7", "localhost", "::1", "LOCALHOST"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["shop.invalid", "10.0.0.1", "192.168.1.1", "8.8.8.8", "127.0.0.1.nip.invalid"]
)
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_remote_target_refused_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("a DNS lookup happened")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(socket, "gethostbyname", no_dns)
    with pytest.raises(TargetRefusedError) as info:
        check_target_allowed("http://shop.invalid:8080", ())
    text = info.value.render()
    assert "'shop.invalid' is not on loopback" in text
    assert "target.allow_hosts" in text


def test_allow_list_admits_a_named_host() -> None:
    check_target_allowed("https://shop.invalid", ("SHOP.invalid",))
    check_target_allowed("http://127.0.0.1:1", ())


def test_unreachable_target_names_the_fix() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on that port now
    with pytest.raises(PreflightError, match="unreachable") as info:
        check_target_reachable(f"http://127.0.0.1:{port}", timeout_s=1)
    assert "spike target serve" in info.value.render()


def test_busy_port_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PreflightError, match=f"port {port}") as info:
            check_port_free("127.0.0.1", port)
        assert "--port" in info.value.render()
