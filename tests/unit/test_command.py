from pathlib import Path

import pytest

from loadorch.engine.gatling.build import CompiledSimulation, cache_key, gatling_project, maven_command
from loadorch.engine.gatling.command import injector_command, parse_jvm_options, reports_only_command
from loadorch.errors import BadInputError
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile
from loadorch.run.settings import jvm_options_from_env


def compiled(tmp_path: Path) -> CompiledSimulation:
    (tmp_path / "classpath.txt").write_text("/m2/a.jar:/m2/b.jar\n")
    return CompiledSimulation("k", tmp_path)


def test_injector_command_carries_its_shard_and_the_shared_start(tmp_path: Path) -> None:
    plan = plan_run(
        load_profile("viral-x10").profile, PlanOptions(now_ms=1_000_000, regions=("eu-west-2", "us-east-1"))
    )
    injector = plan.injectors[1]
    cmd = injector_command(
        compiled(tmp_path),
        plan,
        injector,
        results_dir=tmp_path / "r",
        feeders={"posts": "/data/posts.csv"},
        heap_mb=256,
    )
    argv = list(cmd.argv)
    assert argv[0] == "java"
    assert "-Xmx256m" in argv
    assert argv[argv.index("-cp") + 1] == f"{tmp_path}/target/test-classes:/m2/a.jar:/m2/b.jar"
    assert f"-Dspike.curve={injector.curve.encode()}" in argv
    assert f"-Dspike.startAtMs={plan.start_at_ms}" in argv
    assert "-Dspike.injector=us-east-1-1" in argv
    assert "-Dspike.baseUrl=http://127.0.0.1:8080" in argv
    assert "-Dspike.feeder.posts=/data/posts.csv" in argv
    # nothing may call out of this machine: analytics off, the warm-up request goes to the target
    assert "-Dgatling.data.enableAnalytics=false" in argv
    assert [a for a in argv if a.startswith("-Dgatling.http.warmUpUrl=")] == [
        "-Dgatling.http.warmUpUrl=http://127.0.0.1:8080"
    ]
    main = argv.index("io.gatling.app.Gatling")
    assert argv[main + 1 :][:2] == ["-s", "spike.SpikeSimulation"]
    assert "-nr" in argv and argv[argv.index("-rf") + 1] == str(tmp_path / "r")


def test_reports_only_command(tmp_path: Path) -> None:
    cmd = reports_only_command("cp", tmp_path, "report")
    argv = list(cmd.argv)
    assert argv[argv.index("-ro") + 1] == "report"
    assert argv[argv.index("-rf") + 1] == str(tmp_path)
    assert "-nr" not in argv


def test_maven_command_and_cache_key(tmp_path: Path) -> None:
    cmd = maven_command(tmp_path)
    assert cmd.argv[:3] == ("mvn", "-B", "-q")
    assert "test-compile" in cmd.argv and "dependency:build-classpath" in cmd.argv
    assert cmd.cwd == tmp_path
    project = gatling_project()
    assert cache_key("a", project) == cache_key("a", project)
    assert cache_key("a", project) != cache_key("b", project)


def test_extra_jvm_options_come_before_the_classpath_in_both_commands(tmp_path: Path) -> None:
    plan = plan_run(load_profile("smoke").profile, PlanOptions(now_ms=1_000_000))
    options = ("-XX:TieredStopAtLevel=1", "-Xss512k")
    injector = list(
        injector_command(
            compiled(tmp_path), plan, plan.injectors[0], results_dir="r", feeders={}, jvm_options=options
        ).argv
    )
    report = list(reports_only_command("cp", tmp_path, "report", jvm_options=options).argv)
    for argv in (injector, report):
        at = argv.index("-XX:TieredStopAtLevel=1")
        assert argv[at : at + 2] == list(options)
        assert at < argv.index("-cp") < argv.index("io.gatling.app.Gatling")
    assert (
        "-XX:TieredStopAtLevel=1"
        not in injector_command(compiled(tmp_path), plan, plan.injectors[0], results_dir="r", feeders={}).argv
    )


def test_jvm_options_are_split_as_a_shell_would_and_spikes_own_are_refused() -> None:
    assert parse_jvm_options("") == ()
    assert parse_jvm_options(" -XX:TieredStopAtLevel=1  '-XX:OnError=echo a b' ") == (
        "-XX:TieredStopAtLevel=1",
        "-XX:OnError=echo a b",
    )
    for bad, says in [
        ("-Xmx4g", "JVM option '-Xmx4g' is spike's to set"),
        ("-Dspike.curve=x", "JVM option '-Dspike.curve=x' is spike's to set"),
        ("-cp /tmp", "JVM option '-cp' is spike's to set"),
        ("-XX:+UseZGC oops", "'oops' is not a JVM option"),
        ("'-XX:+UseZGC", "cannot split the JVM options"),
    ]:
        with pytest.raises(BadInputError) as caught:
            parse_jvm_options(bad)
        assert caught.value.where == "SPIKE_JVM_OPTIONS"
        assert says in caught.value.message, caught.value.message


def test_a_bad_spike_jvm_options_is_refused_when_the_settings_are_made(tmp_path: Path) -> None:
    assert jvm_options_from_env({"SPIKE_JVM_OPTIONS": "-XX:TieredStopAtLevel=1"}) == (
        "-XX:TieredStopAtLevel=1",
    )
    assert jvm_options_from_env({}) == ()
    with pytest.raises(BadInputError):
        jvm_options_from_env({"SPIKE_JVM_OPTIONS": "-Xms1g"})


def test_maven_runs_with_a_jvm_for_short_builds_unless_maven_opts_is_set(tmp_path: Path) -> None:
    assert maven_command(tmp_path, environ={}).env == {
        "MAVEN_OPTS": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
    }
    assert maven_command(tmp_path, environ={"MAVEN_OPTS": "-Xmx1g"}).env == {"MAVEN_OPTS": "-Xmx1g"}
