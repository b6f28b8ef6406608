"""The launcher's restart rule and its choice of training workers, without processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.children import (
    MAX_FAST_CRASHES,
    STABLE_SECONDS,
    Child,
    StackError,
    plan_restart,
)
from launcher.stack import auto_train_workers


class Exited:
    """A stand-in for the Popen of a child that exited with `returncode`."""

    def __init__(self, returncode: int) -> None:
        self.returncode = returncode


def crashed(child: Child, returncode: int = -9) -> Child:
    child.process = Exited(returncode)  # type: ignore[assignment]
    return child


def test_backoff_doubles_up_to_a_limit_then_gives_up(tmp_path: Path) -> None:
    child = Child("api", ["python", "-m", "api"], "-m api", lambda: True, {},
                  log_path=tmp_path / "api.log")  # fmt: skip
    (tmp_path / "api.log").write_text("Traceback ...\nKilled\n")
    delays = []
    for number in range(1, MAX_FAST_CRASHES):
        child.started_at = 100.0 * number
        line = plan_restart(crashed(child), now=child.started_at + 0.5)
        delays.append(child.restart_at - (child.started_at + 0.5))
        assert line == (
            f"api exited with status -9; restarting in {delays[-1]:g} s (restart {number})"
        )
        child.restarts += 1
    assert delays == [1, 2, 4, 8, 16]
    with pytest.raises(StackError, match=f"{MAX_FAST_CRASHES} times in a row") as error:
        plan_restart(crashed(child), now=child.started_at + 0.5)
    assert "Killed" in str(error.value)  # the end of its log


def test_a_child_that_ran_a_while_starts_a_new_series() -> None:
    child = Child("worker-1", [], "-m worker", lambda: True, {}, fast_crashes=4)
    child.started_at = 0.0
    plan_restart(crashed(child, 1), now=STABLE_SECONDS + 1)
    assert child.fast_crashes == 1 and child.restart_at == pytest.approx(STABLE_SECONDS + 2)
    # The most it waits, however many times in a row:
    child.fast_crashes = 0
    for _ in range(MAX_FAST_CRASHES - 1):
        plan_restart(crashed(child), now=child.started_at)
    assert child.restart_at - child.started_at <= 30


@pytest.mark.parametrize(
    ("cores", "memory_gib", "expected"),
    [(2, 24, 1), (1, 8, 1), (16, 128, 8), (16, 8, 4), (64, None, 32), (4, 1, 1)],
)
def test_training_workers_follow_the_cores_and_the_memory(
    cores: int, memory_gib: int | None, expected: int
) -> None:
    memory = None if memory_gib is None else memory_gib * 2**30
    assert auto_train_workers(cores, memory) == expected
