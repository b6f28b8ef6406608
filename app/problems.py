"""What a page shows when something goes wrong: a sentence, never a traceback.

An `ApiProblem` is shown as its own sentence (`show`). When no answer came at all, the page
also asks the API's /healthz every `RETRY_SECONDS` by itself (a fragment that reruns on a
timer, so no script run is held) and reruns once it answers, so a page open while the API
restarts recovers without a click. An answer a page cannot read (an API of another version, a
job record that someone else wrote into Redis) stops that page with a sentence saying so
(`guarded`); its traceback goes to the dashboard's log, where whoever runs it looks.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import streamlit as st
from pydantic import ValidationError

from app.api_client import ApiProblem, get_client

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # between checks of an API that did not answer: a restart takes 1-3 s
# What reading an answer of an unexpected shape raises: a missing key, a null where a number
# was, a JSON the result schema refuses (pydantic's ValidationError is a ValueError).
UNREADABLE = (LookupError, TypeError, ValueError, AttributeError)


def show(problem: ApiProblem) -> None:
    """The problem's sentence; for an API that did not answer, the page then tries again."""
    if not problem.unreachable:
        st.error(problem.message)
        return
    st.error(f"{problem.message} {retry_words()}")
    st.fragment(_until_the_api_answers, run_every=RETRY_SECONDS)(time.monotonic())


def retry_words() -> str:
    return f"This page tries again every {RETRY_SECONDS:g} s."


def _until_the_api_answers(shown_at: float) -> None:
    """Rerun the whole page once the API answers again. The fragment's first run is part of
    the page run that just failed: it waits for its timer, so a failing page never reruns in
    a tight loop."""
    if time.monotonic() - shown_at < RETRY_SECONDS / 2:
        return
    if get_client().healthy(timeout=RETRY_SECONDS):
        st.rerun()


def unreadable_words(error: Exception) -> str:
    """A sentence for an answer this page could not read, with the first line of why."""
    if isinstance(error, ValidationError):
        detail = f"{error.error_count()} field(s) of a {error.title} did not validate"
    else:
        lines = str(error).strip().splitlines()
        detail = f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
    return (
        f"This page could not read what the API answered ({detail}); the dashboard and the "
        "API may be of different versions. The dashboard's log has the details."
    )


def guarded(render: Callable[[], None]) -> Callable[[], None]:
    """`render` (a page, or a fragment of one) showing an API problem or an unreadable answer
    as a sentence where it stopped, instead of a traceback."""

    @functools.wraps(render)
    def run() -> None:
        try:
            render()
        except ApiProblem as problem:
            show(problem)
        except UNREADABLE as error:
            log.exception("%s could not read an answer", render.__qualname__)
            st.error(unreadable_words(error))

    return run
