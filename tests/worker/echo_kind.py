"""A made-up kind of job, "echo", whose result is its config: one row and one run function,
as `docs/architecture.md` says a kind is added (tests/worker/test_job_kinds.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract import JobKind
from worker.template import Run, kind_task


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=100)
    repeats: int = Field(1, ge=1, le=10)

    @property
    def label(self) -> str:
        return f"echo {self.message!r}"


ECHO = JobKind(
    name="echo",
    queue="echo",
    task="tests.worker.echo_kind.run_echo_job",
    config=EchoConfig,
    result=EchoConfig,
    unit="echoes",
    timeout="spp_job_timeout",
    total=lambda config: config.repeats,
)


@kind_task(ECHO)
def run_echo_job(run: Run) -> dict[str, Any]:
    for done in range(1, run.config.repeats + 1):
        run.progress(done, run.config.repeats)
    return run.config.model_dump(mode="json")


# A worker that knows the kind: what an operator's own entry point would do.
WORKER_SCRIPT = """
from contract import register_kind
from tests.worker.echo_kind import ECHO
register_kind(ECHO)
from worker.main import main
main()
"""
