"""What a page shows when something goes wrong (`app.problems`): a sentence, never a traceback;
and the words of a running job whose worker is late to report (`app.runs`)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from app.runs import Run, progress_words, silence_words


def page_raising(error: str) -> AppTest:
    """A page, wrapped as every page is, whose render raises `error` midway."""

    def page() -> None:
        import streamlit as st
        from pydantic import BaseModel

        from app.api_client import ApiProblem
        from app.problems import guarded

        class Shape(BaseModel):
            steps: list[int]

        problems = {
            "validation": lambda: Shape.model_validate({"steps": "many"}),
            "key": lambda: {}["progress"],
            "api": lambda: (_ for _ in ()).throw(ApiProblem("job abc is running; no result yet")),
            "unreachable": lambda: (_ for _ in ()).throw(
                ApiProblem("The API at http://x is not answering.", unreachable=True)
            ),
        }

        @guarded
        def render() -> None:
            st.title("A page")
            problems[st.session_state["raise"]]()
            st.write("never shown")

        render()

    at = AppTest.from_function(page, default_timeout=30)
    at.session_state["raise"] = error
    return at.run()


def test_an_answer_a_page_cannot_read_is_a_sentence_not_a_traceback() -> None:
    for kind, words in (
        ("validation", "1 field(s) of a Shape did not validate"),
        ("key", "KeyError: 'progress'"),
    ):
        at = page_raising(kind)
        assert not at.exception, at.exception
        assert at.title[0].value == "A page"
        [error] = at.error
        assert error.value == (
            f"This page could not read what the API answered ({words}); the dashboard and the "
            "API may be of different versions. The dashboard's log has the details."
        )
        assert not at.markdown or "never shown" not in [m.value for m in at.markdown]


def test_an_api_problem_is_its_sentence_and_no_answer_says_the_page_retries() -> None:
    at = page_raising("api")
    assert [e.value for e in at.error] == ["job abc is running; no result yet"]
    at = page_raising("unreachable")
    assert not at.exception
    assert [e.value for e in at.error] == [
        "The API at http://x is not answering. This page tries again every 2 s."
    ]


LATE = {"age": 21.4, "late": True, "abandoned_in": 8.2}


def test_a_late_heartbeat_says_how_long_the_worker_is_silent_and_what_happens_next() -> None:
    assert silence_words(LATE) == (
        "the worker has not reported for 21 s; if it stopped, the job will be run again from "
        "the start (or fail) within about 9 s"
    )
    assert silence_words({**LATE, "abandoned_in": 0.0}).endswith("(or fail) in a few seconds")
    assert silence_words({**LATE, "abandoned_in": None}).endswith("in a few seconds")
    # On time, or an API that does not say: nothing to add.
    for quiet in (None, {**LATE, "late": False}, {"late": True}, {**LATE, "age": "21"}, []):
        assert silence_words(quiet) is None


def test_the_explorers_progress_bar_says_when_the_worker_is_late_or_the_job_started_over() -> None:
    from app.views.explore import _progress_text

    job = {"state": "running", "progress": {"done": 10, "total": 200}, "attempt": 1,
           "heartbeat": {"age": 1.2, "late": False, "abandoned_in": 28.0}}  # fmt: skip
    run = Run("NF-ResNet-50", "abc", job=job)
    assert _progress_text(run) == "NF-ResNet-50: running, 10/200 blocks"
    late = Run("NF-ResNet-50", "abc", job={**job, "heartbeat": LATE})
    assert _progress_text(late) == (
        "NF-ResNet-50: running, 10/200 blocks; the worker has not reported for 21 s; if it "
        "stopped, the job will be run again from the start (or fail) within about 9 s"
    )
    again = {**job, "state": "queued", "attempt": 2, "progress": {"done": 0, "total": 200}}
    assert progress_words(again) == "; again from the start (attempt 2)"
