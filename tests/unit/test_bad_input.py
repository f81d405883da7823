"""A corpus of malformed profiles, inventories and options: every one exits 2 with where, what and a fix.

Each case runs the real CLI in an empty working directory (and an empty SPIKE_HOME) and checks:
exit status 2; the exact `file:line:column` (or the option) the error points at; what is wrong;
a `fix:` hint; no traceback; and that no file or directory appeared (no run directory, no key,
no Terraform state, no build cache).
"""

from __future__ import annotations

import ast
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from loadorch.cli.main import app
from loadorch.errors import PreflightError, ProfileError
from loadorch.profiles.loader import MAX_ALIAS_VALUES, load_profile, parse_yaml

runner = CliRunner()
REPO = Path(__file__).parents[2]

BASE = """\
name: corpus
target:
  base_url: http://127.0.0.1:9
baseline_rate_per_s: 5
shape:
  kind: steps
  steps:
    - {duration_s: 10, rate_per_s: 5}
scenario:
  requests:
    - {name: home, path: /}
"""
REPLAY = BASE.replace(
    "  kind: steps\n  steps:\n    - {duration_s: 10, rate_per_s: 5}\n",
    "  kind: replay\n  points: [[0, 5], [10, 5]]\n",
)
FEEDER = (
    BASE.replace("path: /}", 'path: "/posts/{post_id}"}')
    + "  feeders:\n    - {name: posts, file: posts.csv}\n"
)
FINGERPRINT = "SHA256:" + "A" * 43
INVENTORY = f"""\
defaults:
  key: id_ed25519
hosts:
  - host: 127.0.0.2
    region: eu-west-2
    host_key: '{FINGERPRINT}'
"""
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
)


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def alias_bomb() -> str:
    """The billion laughs: each level lists the previous one ten times."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join(f"*{previous}" for _ in range(10)) + "]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """`args` and `where` may hold {tmp}: the working directory; `files` are written there first."""

    id: str
    args: tuple[str, ...]
    where: str  # what the error must point at: file:line:column, or the option/file for non-file input
    message: str  # what is wrong (a substring of the output)
    files: dict[str, str | bytes] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()


def validate(text: str | bytes, where: str, message: str, case_id: str, **files: str | bytes) -> Case:
    return Case(case_id, ("profiles", "validate", "p.yaml"), where, message, {"p.yaml": text, **files})


def run_with_hosts(
    inventory: str | bytes, where: str, message: str, case_id: str, **files: str | bytes
) -> Case:
    return Case(
        case_id,
        (
            "run",
            "--profile",
            "ok.yaml",
            "--provider",
            "static",
            "--hosts",
            "hosts.yaml",
            "--regions",
            "eu-west-2",
        ),
        where,
        message,
        {"ok.yaml": BASE, "hosts.yaml": inventory, "id_ed25519": PRIVATE_KEY, **files},
    )


def option(args: tuple[str, ...], where: str, message: str, case_id: str) -> Case:
    return Case(case_id, args, where, message, {"ok.yaml": BASE})


CASES = [
    # -- YAML structure -------------------------------------------------------------------------
    validate(
        alias_bomb(), "p.yaml:5:36", f"aliases expand to more than {MAX_ALIAS_VALUES:,} values", "alias-bomb"
    ),
    validate(
        BASE + "description: &d [1, 2]\nslos: *e\n",
        "p.yaml:13:7",
        "alias *e has no anchor &e",
        "undefined-alias",
    ),
    validate(
        edit(BASE, "name: corpus", "name: !!python/object/apply:os.system [echo hi]"),
        "p.yaml:1:7",
        "YAML tag !!python/object/apply:os.system is not allowed",
        "python-tag",
    ),
    validate(
        edit(BASE, "target:\n", "target: !foo\n"), "p.yaml:2:9", "YAML tag !foo is not allowed", "unknown-tag"
    ),
    validate(
        BASE + "description: !!binary aGk=\n",
        "p.yaml:12:14",
        "YAML tag !!binary is not allowed",
        "binary-tag",
    ),
    validate(BASE + "slos: !!set {a, b}\n", "p.yaml:12:7", "YAML tag !!set is not allowed", "set-tag"),
    validate(
        BASE + "description: " + "[" * 100 + "]" * 100 + "\n",
        "p.yaml:12:77",
        "nested more than 64 levels deep",
        "deep-flow-nesting",
    ),
    validate(
        BASE + "".join(f"{'  ' * i}k{i}:\n" for i in range(70)),
        "p.yaml:76:129",
        "nested more than 64 levels deep",
        "deep-block-nesting",
    ),
    validate(
        BASE + "? [a, b]\n: 1\n", "p.yaml:12:3", "a key is a list; keys must be plain names", "list-key"
    ),
    validate(BASE + "{a: 1}: x\n", "p.yaml:12:1", "a key is a mapping", "mapping-key"),
    validate(
        BASE + "name: again\n", "p.yaml:12:1", "duplicate key 'name' (first given at line 1)", "duplicate-key"
    ),
    validate(BASE + "---\nname: second\n", "p.yaml:12:1", "more than one YAML document", "two-documents"),
    validate(BASE + "description: ring\x07bell\n", "p.yaml:12:18", "is not allowed in YAML", "control-char"),
    validate(edit(BASE, "  kind: steps", "\tkind: steps"), "p.yaml:6:1", "not valid YAML", "tab-indent"),
    validate(BASE + "description: [unclosed\n", "p.yaml:13:1", "not valid YAML", "unclosed-flow"),
    # -- bytes ----------------------------------------------------------------------------------
    validate(
        BASE.encode() + "description: caf\u00e9 cr\u00e8me\n".encode("latin-1"),
        "p.yaml:12:17",
        "byte 0xe9 is not UTF-8",
        "latin1-profile",
    ),
    validate(b"\xff\xfename: x\n", "p.yaml:1:1", "byte 0xff is not UTF-8", "utf16-bom-profile"),
    validate(
        FEEDER,
        "{tmp}/posts.csv:3:4",
        "byte 0xe9 is not UTF-8",
        "latin1-feeder",
        **{"posts.csv": b"post_id\n1\ncaf\xe9\n"},
    ),
    validate(
        edit(REPLAY, "  points: [[0, 5], [10, 5]]", "  curve_file: curve.csv"),
        "{tmp}/curve.csv:2:3",
        "byte 0xb5 is not UTF-8",
        "latin1-curve",
        **{"curve.csv": b"t_s,rate_per_s\n0,\xb5\n"},
    ),
    # -- files that are not profiles ------------------------------------------------------------
    validate("", "p.yaml:1:1", "the profile is empty", "empty-file"),
    validate("# only a comment\n\n", "p.yaml:1:1", "the profile is empty", "comments-only"),
    validate("- name: a\n- name: b\n", "p.yaml:1:1", "a profile is a YAML mapping", "top-level-list"),
    validate("just words\n", "p.yaml:1:1", "a profile is a YAML mapping", "top-level-scalar"),
    Case(
        "directory",
        ("profiles", "validate", "p.yaml"),
        "p.yaml is a directory",
        "not a profile file",
        dirs=("p.yaml",),
    ),
    Case("missing-file", ("profiles", "validate", "nope.yaml"), "nope.yaml", "does not exist"),
    Case(
        "shadowed-builtin",
        ("plan", "--profile", "smoke"),
        "./smoke.yaml",
        "profile 'smoke' is ambiguous: it names the built-in profile 'smoke' and the file ./smoke.yaml",
        {"smoke.yaml": BASE},
    ),
    Case(
        "unknown-builtin",
        ("plan", "--profile", "builtin:nope"),
        "profile 'nope'",
        "no built-in profile 'nope'",
    ),
    # -- values ---------------------------------------------------------------------------------
    validate(
        edit(BASE, "baseline_rate_per_s: 5", "baseline_rate_per_s: .inf"),
        "p.yaml:4:22",
        ".inf is not a finite number",
        "inf-rate",
    ),
    validate(
        edit(BASE, "rate_per_s: 5}", "rate_per_s: .nan}"),
        "p.yaml:8:36",
        ".nan is not a finite number",
        "nan-rate",
    ),
    validate(
        edit(REPLAY, "[10, 5]", "[10, -.inf]"),
        "p.yaml:7:25",
        "-.inf is not a finite number",
        "inf-point",
    ),
    validate(
        edit(BASE, "duration_s: 10", "duration_s: 1000000000000"),
        "p.yaml:8:20",
        "shape.steps[0].duration_s: Input should be less than or equal to 604800",
        "huge-duration",
    ),
    validate(
        edit(BASE, "http://127.0.0.1:9", "ftp://127.0.0.1:21"),
        "p.yaml:3:13",
        "'ftp://127.0.0.1:21' has ftp://",
        "ftp-target",
    ),
    validate(
        edit(BASE, "http://127.0.0.1:9", "http://127.0.0.1:99999"),
        "p.yaml:3:13",
        "has an invalid port",
        "port-range",
    ),
    validate(
        edit(BASE, "http://127.0.0.1:9", "'http://[::1'"), "p.yaml:3:13", "is not a valid URL", "broken-ipv6"
    ),
    validate(BASE + "'[a-z]': 1\n", "p.yaml:12:1", "unknown key '[a-z]'", "markup-key"),
    validate(BASE + "'[/]': 1\n", "p.yaml:12:1", "unknown key '[/]'", "markup-closing-tag"),
    # -- cross-field checks point at the field --------------------------------------------------
    validate(
        BASE + "regions:\n  - {name: eu-west-2}\n  - {name: eu-west-2}\n",
        "p.yaml:14:12",
        "region names must be unique: 'eu-west-2' is given twice",
        "duplicate-region",
    ),
    validate(
        BASE + "slos:\n  latency:\n    - {percentile: 95, max_ms: 100, request: nope}\n",
        "p.yaml:14:46",
        "SLO names request 'nope'",
        "slo-unknown-request",
    ),
    validate(
        edit(BASE, "scenario:\n", "scenario:\n  think_time: {min_ms: 500, max_ms: 100}\n"),
        "p.yaml:10:37",
        "max_ms (100) must be >= min_ms (500)",
        "think-time-order",
    ),
    validate(
        edit(
            BASE,
            "    - {name: home, path: /}\n",
            "    - {name: home, path: /}\n    - {name: home, path: /a}\n",
        ),
        "p.yaml:12:14",
        "request names must be unique, repeated: home",
        "duplicate-request",
    ),
    validate(
        edit(REPLAY, "  points:", "  curve_file: c.csv\n  points:"),
        "p.yaml:8:3",
        "give exactly one of curve_file or points, not both",
        "replay-two-sources",
    ),
    validate(
        edit(REPLAY, "[[0, 5], [10, 5]]", "[[0, 5], [10, 5], [5, 1]]"),
        "p.yaml:7:29",
        "replay curve times go backwards",
        "replay-backwards",
    ),
    # -- feeders --------------------------------------------------------------------------------
    validate(FEEDER, "p.yaml:13:27", "feeder 'posts'", "empty-feeder", **{"posts.csv": ""}),
    validate(
        FEEDER,
        "p.yaml:13:27",
        "needs a header row and at least one data row",
        "header-only-feeder",
        **{"posts.csv": "post_id\n"},
    ),
    Case(
        "feeder-is-directory",
        ("profiles", "validate", "p.yaml"),
        "p.yaml:13:27",
        "is a directory, not a CSV file",
        {"p.yaml": FEEDER},
        dirs=("posts.csv",),
    ),
    # -- inventories ----------------------------------------------------------------------------
    run_with_hosts(
        INVENTORY.encode().replace(b"eu-west-2", b"eu-w\xe9st-2"),
        "hosts.yaml:5:17",
        "byte 0xe9 is not UTF-8",
        "latin1-inventory",
    ),
    run_with_hosts(
        INVENTORY + "    key: |\n      " + PRIVATE_KEY.replace("\n", "\n      "),
        "hosts.yaml:8:7",
        "the inventory contains a private key",
        "private-key-inline",
    ),
    run_with_hosts(
        edit(INVENTORY, "host: 127.0.0.2", "host: 'shop invalid'"),
        "hosts.yaml:4:11",
        "'shop invalid' is not a valid host name",
        "inventory-bad-host",
    ),
    run_with_hosts(
        edit(INVENTORY, "key: id_ed25519", "key: missing_key"),
        "hosts.yaml:2:8",
        "key file {tmp}/missing_key not found",
        "inventory-missing-key",
    ),
    run_with_hosts("", "hosts.yaml:1:1", "the inventory is empty", "inventory-empty"),
    run_with_hosts(
        "- host: 127.0.0.2\n", "hosts.yaml:1:1", "inventory is a YAML mapping, not a list", "inventory-list"
    ),
    run_with_hosts(
        edit(INVENTORY, "region: eu-west-2", "region: EU_West"),
        "hosts.yaml:5:13",
        "hosts[0].region: String should match pattern",
        "inventory-bad-region",
    ),
    run_with_hosts(
        INVENTORY + "  - {host: 127.0.0.3, region: eu-west-2, host_key: trust-me}\n",
        "hosts.yaml:7:52",
        "host_key is the host's SHA256 fingerprint",
        "inventory-unpinned",
    ),
    run_with_hosts(
        INVENTORY + "hosts: []\n", "hosts.yaml:7:1", "duplicate key 'hosts'", "inventory-duplicate-key"
    ),
    # -- options --------------------------------------------------------------------------------
    option(
        ("plan", "--profile", "ok.yaml", "--regions", ""), "--regions", "'' names no region", "regions-empty"
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--regions", ","),
        "--regions",
        "',' names no region",
        "regions-comma",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--regions", "eu-west-2,,us-east-1"),
        "--regions",
        "has an empty region name",
        "regions-empty-name",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--regions", "eu-west-2,eu-west-2"),
        "--regions",
        "names region 'eu-west-2' twice",
        "regions-duplicate",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--regions", "EU-WEST-2"),
        "--regions",
        "'EU-WEST-2' is not a region name (did you mean eu-west-2?)",
        "regions-uppercase",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--regions", "[/]"),
        "--regions",
        "'[/]' is not a region name",
        "regions-markup",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--target", "ftp://127.0.0.1:21"),
        "--target",
        "'ftp://127.0.0.1:21' has ftp://; the target must be an http:// or https:// URL",
        "target-ftp",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--target", "http://127.0.0.1:99999"),
        "--target",
        "has an invalid port",
        "target-port",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--target", "http://[::1"),
        "--target",
        "is not a valid URL",
        "target-ipv6",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--target", "http://shop.invalid:0"),
        "--target",
        "has port 0",
        "target-port-0",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--provider", "aws", "--aws-endpoint", "ftp://127.0.0.1:5000"),
        "--aws-endpoint",
        "invalid AWS endpoint: 'ftp://127.0.0.1:5000' has ftp://",
        "aws-endpoint-scheme",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--provider", "aws", "--operator-cidr", "0.0.0.0/0"),
        "--operator-cidr",
        "operator CIDR 0.0.0.0/0 would open the injectors",
        "operator-cidr-open",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--provider", "aws", "--operator-cidr", "not-an-address"),
        "--operator-cidr",
        "is neither a CIDR nor an IP address",
        "operator-cidr-garbage",
    ),
    option(
        ("plan", "--profile", "ok.yaml", "--provider", "aws", "--max-cost", "nan"),
        "--max-cost",
        "nan is not a number >= 0",
        "max-cost-nan",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--provider", "aws", "--host-key-timeout", "-1"),
        "--host-key-timeout",
        "-1.0 is not a number >= 0",
        "host-key-timeout-negative",
    ),
    option(
        ("run", "--profile", "ok.yaml", "--provider", "static"),
        "--provider static needs an inventory",
        "needs an inventory of SSH hosts",
        "static-without-hosts",
    ),
    Case(
        "hosts-is-directory",
        ("run", "--profile", "ok.yaml", "--provider", "static", "--hosts", "inv"),
        "inv",
        "inventory inv is a directory",
        {"ok.yaml": BASE},
        dirs=("inv",),
    ),
]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_exits_2_with_where_what_and_fix(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    for name, content in case.files.items():
        target = work / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    for name in case.dirs:
        (work / name).mkdir()
    monkeypatch.chdir(work)
    before = tree(work)
    result = runner.invoke(
        app,
        list(case.args),
        env={"SPIKE_HOME": str(home), "COLUMNS": "250", "AWS_EC2_METADATA_DISABLED": "true"},
    )
    output = result.output
    assert result.exit_code == 2, output
    assert case.where.format(tmp=work) in output, output
    assert case.message.format(tmp=work) in output, output
    assert "fix:" in output, output
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert tree(work) == before, "the failed command created files"
    assert tree(home) == set(), "the failed command wrote to SPIKE_HOME"


def test_the_corpus_is_large() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


# -- the printer ---------------------------------------------------------------------------------


def test_error_messages_print_markup_literally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("p.yaml").write_text(BASE + "'[bold]x[/]': 1\n'[a-z]': 2\n")
    result = runner.invoke(app, ["profiles", "validate", "p.yaml"])
    assert result.exit_code == 2
    assert "unknown key '[bold]x[/]'" in result.output
    assert "unknown key '[a-z]'" in result.output
    result = runner.invoke(app, ["plan", "--profile", "[/]x.yaml"])
    assert result.exit_code == 2
    assert "profile file [/]x.yaml does not exist" in result.output


# -- validate: every file reported ---------------------------------------------------------------


def test_validate_reports_every_file_whatever_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("good.yaml").write_text(BASE)
    Path("latin.yaml").write_bytes(b"name: caf\xe9\n")
    Path("folder.yaml").mkdir()
    Path("bomb.yaml").write_text(alias_bomb())
    Path("also-good.yaml").write_text(edit(BASE, "name: corpus", "name: second"))
    files = ["good.yaml", "latin.yaml", "folder.yaml", "missing.yaml", "bomb.yaml", "also-good.yaml"]
    result = runner.invoke(app, ["profiles", "validate", *files])
    assert result.exit_code == 2
    assert "good.yaml: profile 'corpus' is valid" in result.output
    assert "latin.yaml:1:10: byte 0xe9 is not UTF-8" in result.output
    assert "folder.yaml is a directory" in result.output
    assert "profile file missing.yaml does not exist" in result.output
    assert "bomb.yaml:5:36" in result.output
    assert "also-good.yaml: profile 'second' is valid" in result.output
    assert result.output.count("✗") == 4


def test_validate_passes_when_every_file_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("good.yaml").write_text(BASE)
    result = runner.invoke(app, ["profiles", "validate", "good.yaml", "smoke"])
    assert result.exit_code == 0, result.output
    assert "profile 'smoke' is valid" in result.output


# -- which file a name means ---------------------------------------------------------------------


def test_a_path_or_suffix_picks_the_local_file_and_builtin_prefix_the_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("smoke.yaml").write_text(edit(BASE, "name: corpus", "name: my-smoke"))
    assert load_profile("./smoke.yaml").profile.name == "my-smoke"
    assert load_profile("smoke.yaml").profile.name == "my-smoke"
    assert load_profile("builtin:smoke").profile.name == "smoke"
    with pytest.raises(ProfileError) as caught:
        load_profile("smoke")
    assert caught.value.fix == "give ./smoke.yaml for the file, or builtin:smoke for the built-in"


def test_a_bare_name_is_the_builtin_without_a_lookalike_and_a_file_without_a_builtin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mine").write_text(edit(BASE, "name: corpus", "name: mine"))
    assert load_profile("smoke").profile.name == "smoke"
    assert load_profile("mine").profile.name == "mine"
    Path("other.yaml").write_text(BASE)
    with pytest.raises(ProfileError, match=r"unknown profile 'other'; did you mean \./other\.yaml\?"):
        load_profile("other")


# -- YAML that is fine ---------------------------------------------------------------------------


def test_a_few_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = BASE.replace(
        "    - {name: home, path: /}\n",
        "    - &home {name: home, path: /, headers: &h {X-Team: sre}}\n"
        "    - {<<: *home, name: feed, path: /feed}\n"
        "    - {name: post, path: /post, headers: *h}\n",
    )
    path = tmp_path / "p.yaml"
    path.write_text(text)
    requests = load_profile(path).profile.scenario.requests
    assert [(r.name, r.path, r.headers) for r in requests] == [
        ("home", "/", {"X-Team": "sre"}),
        ("feed", "/feed", {"X-Team": "sre"}),
        ("post", "/post", {"X-Team": "sre"}),
    ]


def test_plain_values_resolve_as_yaml_1_1(tmp_path: Path) -> None:
    data, _ = parse_yaml(
        "a: 010\nb: 0x1f\nc: 1_000\nd: 1.5e+3\ne: yes\nf: ~\ng: '5'\nh: !!str 5\ni: 2026-01-02\nj: =\n",
        tmp_path / "x",
    )
    assert data["a"] == 8 and data["b"] == 31 and data["c"] == 1000 and data["d"] == 1500.0
    assert data["e"] is True and data["f"] is None and data["g"] == "5" and data["h"] == "5"
    assert str(data["i"]) == "2026-01-02" and data["j"] == "="


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    started = time.perf_counter()
    with pytest.raises(ProfileError, match="aliases expand"):
        load_profile(path)
    assert time.perf_counter() - started < 1.0


# -- hints name only options that exist ----------------------------------------------------------


def _spike_options() -> set[str]:
    options: set[str] = set()

    def walk(command: object) -> None:
        for param in getattr(command, "params", []):
            options.update(param.opts, getattr(param, "secondary_opts", []))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    return options


def test_every_option_a_hint_names_exists() -> None:
    options = _spike_options()
    named: dict[str, list[str]] = {}
    for file in (REPO / "loadorch").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "").endswith("Error")):
                continue
            parts = [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("fix", "where"))]
            for part in parts:
                for constant in ast.walk(part):
                    if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                        for name in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", constant.value):
                            named.setdefault(name, []).append(f"{file.relative_to(REPO)}:{constant.lineno}")
    assert "--regions" in named and "--aws-endpoint" in named  # the scan sees hints at all
    unknown = {name: where for name, where in named.items() if name not in options}
    assert unknown == {}


# -- provider preflight --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_aws_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup off loopback


def aws_provider(tmp_path: Path, **settings: object) -> object:
    from loadorch.providers.aws import AwsProvider, AwsSettings

    return AwsProvider(AwsSettings(**settings), cache_dir=tmp_path / "cache")  # type: ignore[arg-type]


def test_building_an_aws_provider_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    aws_provider(tmp_path, endpoint="http://127.0.0.1:1", operator_cidr="127.0.0.1/32")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("no_aws_credentials")
def test_aws_preflight_without_credentials_names_the_variables(tmp_path: Path) -> None:
    provider = aws_provider(
        tmp_path, endpoint=f"http://127.0.0.1:{_closed_port()}", operator_cidr="127.0.0.1/32"
    )
    with pytest.raises(PreflightError) as caught:
        provider.preflight()  # type: ignore[attr-defined]
    assert "no usable AWS credentials" in caught.value.message
    fix = caught.value.fix
    assert fix is not None
    assert "AWS_PROFILE" in fix and "AWS_ACCESS_KEY_ID" in fix
    assert caught.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_aws_preflight_at_a_closed_endpoint_names_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    provider = aws_provider(tmp_path, endpoint=endpoint, operator_cidr="127.0.0.1/32")
    started = time.monotonic()
    with pytest.raises(PreflightError) as caught:
        provider.preflight()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 10
    assert f"cannot reach {endpoint}" in caught.value.message
    assert caught.value.fix == f"check --aws-endpoint {endpoint}: is the emulator running there?"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"endpoint": "ftp://127.0.0.1:5000", "operator_cidr": "127.0.0.1/32"}, "invalid AWS endpoint"),
        ({"endpoint": "http://127.0.0.1:5000"}, "the operator CIDR cannot be detected"),
        ({"endpoint": "http://127.0.0.1:5000", "operator_cidr": "10.0.0.0/33"}, "10.0.0.0/33"),
    ],
)
def test_aws_preflight_refuses_bad_settings_before_any_call(
    settings: dict[str, object], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.client

    def no_call(*args: object, **kwargs: object) -> None:
        raise AssertionError("an AWS call was made")

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", no_call)
    with pytest.raises(Exception) as caught:
        aws_provider(tmp_path, **settings).preflight()  # type: ignore[attr-defined]
    assert message in str(caught.value)
    assert getattr(caught.value, "exit_code", None) == 2


def test_aws_preflight_accepts_credentials_aws_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        provider = aws_provider(tmp_path, operator_cidr="127.0.0.1/32")
        provider.preflight()  # type: ignore[attr-defined]
    assert provider.caller_arn == "arn:aws:sts::123456789012:user/moto"  # type: ignore[attr-defined]


def test_aws_preflight_reports_rejected_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws
    from moto.core import set_initial_no_auth_action_count

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")

    @set_initial_no_auth_action_count(0)
    @mock_aws
    def check() -> PreflightError:
        with pytest.raises(PreflightError) as caught:
            aws_provider(tmp_path, operator_cidr="127.0.0.1/32").preflight()  # type: ignore[attr-defined]
        return caught.value

    error = check()
    assert "AWS rejected the credentials (InvalidClientTokenId)" in error.message
    assert error.fix is not None
    assert "aws sso login" in error.fix


# -- static preflight ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB user@host\n", "is a public key"),
        ("not a key at all\n", "does not hold an OpenSSH or PEM private key"),
    ],
)
def test_static_preflight_checks_the_key_files(key: str, message: str, tmp_path: Path) -> None:
    from loadorch.providers.static import StaticProvider

    (tmp_path / "id_ed25519").write_text(key)
    (tmp_path / "hosts.yaml").write_text(INVENTORY)
    provider = StaticProvider(tmp_path / "hosts.yaml", cache_dir=tmp_path / "cache")
    with pytest.raises(PreflightError) as caught:
        provider.preflight()
    assert message in caught.value.message
    assert caught.value.where == f"{tmp_path / 'hosts.yaml'}:2:8"
    (tmp_path / "id_ed25519").write_text(PRIVATE_KEY)
    provider.preflight()


def test_local_preflight_does_nothing() -> None:
    from loadorch.providers.local import LocalProvider

    assert LocalProvider().preflight() is None


def test_models_refuse_non_finite_numbers_given_in_python() -> None:
    from pydantic import ValidationError

    from loadorch.profiles.model import Step

    with pytest.raises(ValidationError) as caught:
        Step(duration_s=10, rate_per_s=float("inf"))
    assert caught.value.errors()[0]["type"] == "finite_number"


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 64])
def test_feeder_bytes_are_checked_in_chunks_with_the_whole_file_positions(
    tmp_path: Path, chunk_bytes: int
) -> None:
    from loadorch.profiles.loader import check_utf8_file, decode_utf8

    good = "id,name\n1,caf\u00e9\n2,\u20ac\u00e9\n\n3,x\n".encode()
    (tmp_path / "ok.csv").write_bytes(good)
    check_utf8_file(tmp_path / "ok.csv", chunk_bytes)  # valid, though characters straddle the chunks
    for at in range(len(good) + 1):
        bad = good[:at] + b"\xff" + good[at:]
        file = tmp_path / f"bad{at}.csv"
        file.write_bytes(bad)
        with pytest.raises(ProfileError) as whole:
            decode_utf8(bad, file)
        with pytest.raises(ProfileError) as chunked:
            check_utf8_file(file, chunk_bytes)
        assert chunked.value.where == whole.value.where
