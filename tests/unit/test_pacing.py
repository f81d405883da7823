import threading

from loadorch.pacing import Every, ticking


def test_due_at_once_then_once_per_period() -> None:
    now = [100.0]
    beat = Every(10.0, clock=lambda: now[0])
    seen = []
    for step in range(0, 31):
        now[0] = 100.0 + step
        seen.append(beat.due())
    assert [i for i, due in enumerate(seen) if due] == [0, 10, 20, 30]
    assert beat.elapsed_s == 30.0


def test_ticking_speaks_while_the_block_runs_and_stops_after() -> None:
    said: list[float] = []
    three = threading.Event()

    def say(elapsed_s: float) -> None:
        said.append(elapsed_s)
        if len(said) >= 3:
            three.set()

    with ticking(say, period_s=0.01):
        assert three.wait(timeout=30)
    assert said == sorted(said) and said[0] >= 0.01
    # the thread was joined on the way out: nothing speaks once the block has ended
    assert not any(t.name == "spike-progress" and t.is_alive() for t in threading.enumerate())
