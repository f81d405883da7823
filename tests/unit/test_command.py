from pathlib import Path

from loadorch.engine.gatling.build import CompiledSimulation, cache_key, gatling_project, maven_command
from loadorch.engine.gatling.command import injector_command, reports_only_command
from loadorch.plan.planner import PlanOptions, plan_run
from loadorch.profiles.loader import load_profile


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
