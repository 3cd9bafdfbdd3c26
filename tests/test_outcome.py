"""Tests of supervisor/outcome.py: `classify` decides every outcome from a run's wait status and result."""
from __future__ import annotations

import signal

import pytest

from supervisor.outcome import (
    CRASH_SIGNALS,
    EXIT_OK,
    EXIT_RAISED,
    Outcome,
    StopReason,
    Verdict,
    classify,
    signal_name,
)

TRACEBACK = 'Traceback (most recent call last):\n  File "w.py", line 3, in run\n    1 / 0\nZeroDivisionError: division by zero\n'


def _error(type_: str = "ZeroDivisionError", message: str = "division by zero", traceback: str = TRACEBACK) -> dict[str, object]:
    return {"error": {"type": type_, "message": message, "traceback": traceback}}


# -- succeeded -----------------------------------------------------------------------------------------------


def test_exit_zero_with_ok_result_succeeded() -> None:
    verdict = classify(EXIT_OK, None, {"ok": True}, None)
    assert verdict == Verdict(Outcome.SUCCEEDED, "", "")
    assert not verdict.outcome.failed


def test_exit_zero_without_a_result_is_exit_not_success() -> None:
    verdict = classify(0, None, None, None)
    assert verdict.outcome is Outcome.EXIT
    assert verdict.message == "exited with status 0 without a result"


def test_ok_false_is_not_success() -> None:
    assert classify(0, None, {"ok": False}, None).outcome is Outcome.EXIT


def test_ok_result_but_nonzero_exit_is_not_success() -> None:
    assert classify(3, None, {"ok": True}, None).outcome is Outcome.EXIT


def test_ok_result_but_killed_is_not_success() -> None:
    verdict = classify(None, signal.SIGKILL, {"ok": True}, None)
    assert verdict.outcome is Outcome.KILLED


# -- error ---------------------------------------------------------------------------------------------------


def test_raised_exception_is_error_with_type_message_and_traceback() -> None:
    verdict = classify(EXIT_RAISED, None, _error(), None)
    assert verdict.outcome is Outcome.ERROR
    assert verdict.message == "ZeroDivisionError: division by zero"
    assert verdict.traceback == TRACEBACK
    assert verdict.outcome.failed


def test_error_with_empty_message_names_only_the_type() -> None:
    verdict = classify(EXIT_RAISED, None, _error("KeyboardInterrupt", ""), None)
    assert verdict.outcome is Outcome.ERROR
    assert verdict.message == "KeyboardInterrupt"


def test_error_without_type_or_traceback() -> None:
    verdict = classify(EXIT_RAISED, None, {"error": {"message": "boom"}}, None)
    assert verdict == Verdict(Outcome.ERROR, "Exception: boom", "")


def test_error_message_is_kept_as_the_worker_wrote_it() -> None:
    # Trailing punctuation is part of the message, not a separator to trim.
    verdict = classify(EXIT_RAISED, None, _error("RuntimeError", "expected one of:"), None)
    assert verdict.message == "RuntimeError: expected one of:"


def test_error_result_wins_over_a_signal_after_it() -> None:
    verdict = classify(None, signal.SIGSEGV, _error("ValueError", "bad"), None)
    assert verdict.outcome is Outcome.ERROR
    assert verdict.message == "ValueError: bad"


def test_error_that_is_not_a_table_is_not_an_error_outcome() -> None:
    assert classify(1, None, {"error": "just a string"}, None).outcome is Outcome.EXIT


# -- exit ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [3, 7, 1, 78, 255])
def test_exit_without_result(code: int) -> None:
    verdict = classify(code, None, None, None)
    assert verdict.outcome is Outcome.EXIT
    assert verdict.message == f"exited with status {code} without a result"
    assert verdict.outcome.failed


# -- crash and killed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL])
def test_self_inflicted_signal_is_a_crash(signum: signal.Signals) -> None:
    verdict = classify(None, int(signum), None, None)
    assert verdict.outcome is Outcome.CRASH
    assert verdict.message == f"crashed with {signum.name}"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_from_outside_is_killed(signum: signal.Signals) -> None:
    verdict = classify(None, int(signum), None, None)
    assert verdict.outcome is Outcome.KILLED
    assert verdict.message == f"killed by {signum.name}"


def test_crash_signals_do_not_include_outside_signals() -> None:
    assert signal.SIGKILL not in CRASH_SIGNALS
    assert signal.SIGTERM not in CRASH_SIGNALS
    assert signal.SIGSEGV in CRASH_SIGNALS


def test_unknown_signal_number_is_named_by_number() -> None:
    assert signal_name(signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(200) == "signal 200"
    assert classify(None, 200, None, None) == Verdict(Outcome.KILLED, "killed by signal 200")


# -- timeout -------------------------------------------------------------------------------------------------


def test_timeout_with_sigkill() -> None:
    verdict = classify(None, signal.SIGKILL, None, StopReason.TIMEOUT, 30.0)
    assert verdict.outcome is Outcome.TIMEOUT
    assert verdict.message == "stopped after its timeout of 30s (its stack at the timeout is in stderr)"


def test_timeout_message_without_a_known_timeout() -> None:
    verdict = classify(None, signal.SIGTERM, None, StopReason.TIMEOUT)
    assert verdict == Verdict(Outcome.TIMEOUT, "stopped at its deadline (its stack at the timeout is in stderr)")


def test_timeout_message_keeps_fractional_seconds() -> None:
    assert classify(None, signal.SIGTERM, None, StopReason.TIMEOUT, 0.5, command=True).message == "stopped after its timeout of 0.5s"


@pytest.mark.parametrize(
    ("exit_code", "signum", "result"),
    [
        (0, None, {"ok": True}),  # finished just as the deadline hit
        (1, None, _error()),
        (3, None, None),
        (None, signal.SIGSEGV, None),
        (None, signal.SIGTERM, None),
        (None, None, None),
    ],
)
def test_timeout_stop_reason_wins_over_anything(exit_code: int | None, signum: int | None, result: dict[str, object] | None) -> None:
    verdict = classify(exit_code, signum, result, StopReason.TIMEOUT, 2.0)
    assert verdict.outcome is Outcome.TIMEOUT
    assert verdict.outcome.failed


# -- shutdown and spawner lost -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_shutdown_stop_by_our_signal_is_interrupted_no_failure_and_says_shutdown(signum: signal.Signals) -> None:
    verdict = classify(None, int(signum), None, StopReason.SHUTDOWN)
    assert verdict.outcome is Outcome.INTERRUPTED
    assert not verdict.outcome.failed and not verdict.outcome.counted
    assert verdict.message == f"stopped by {signum.name} at supervisor shutdown"


def test_segfault_while_being_stopped_at_shutdown_is_still_a_crash() -> None:
    verdict = classify(None, signal.SIGSEGV, None, StopReason.SHUTDOWN)
    assert verdict == Verdict(Outcome.CRASH, "crashed with SIGSEGV")


def test_shutdown_stop_that_exited_without_result_is_exit() -> None:
    assert classify(143, None, None, StopReason.SHUTDOWN).outcome is Outcome.EXIT


def test_shutdown_but_the_run_finished_cleanly_is_success() -> None:
    assert classify(0, None, {"ok": True}, StopReason.SHUTDOWN).outcome is Outcome.SUCCEEDED


def test_shutdown_but_the_run_raised_is_error() -> None:
    assert classify(1, None, _error(), StopReason.SHUTDOWN).outcome is Outcome.ERROR


def test_spawner_lost_with_sigkill_is_killed_and_says_spawner() -> None:
    verdict = classify(None, signal.SIGKILL, None, StopReason.SPAWNER_LOST)
    assert verdict == Verdict(Outcome.KILLED, "killed by SIGKILL when the spawner died")


def test_spawner_lost_but_the_run_segfaulted_is_a_crash() -> None:
    assert classify(None, signal.SIGSEGV, None, StopReason.SPAWNER_LOST).outcome is Outcome.CRASH


def test_spawner_lost_without_a_status_is_killed() -> None:
    verdict = classify(None, None, None, StopReason.SPAWNER_LOST)
    assert verdict.outcome is Outcome.KILLED
    assert verdict.message == "the spawner died during the run; its exit status is unknown"


# -- Outcome.failed ------------------------------------------------------------------------------------------


def test_only_succeeded_and_interrupted_are_not_failures_and_only_interrupted_is_not_counted() -> None:
    assert [o for o in Outcome if not o.failed] == [Outcome.SUCCEEDED, Outcome.INTERRUPTED]
    assert [o for o in Outcome if not o.counted] == [Outcome.INTERRUPTED]
    for outcome in (Outcome.ERROR, Outcome.EXIT, Outcome.CRASH, Outcome.KILLED, Outcome.TIMEOUT, Outcome.LIMIT, Outcome.LOST):
        assert outcome.failed, outcome


def test_outcome_values_are_the_stored_strings() -> None:
    assert Outcome("succeeded") is Outcome.SUCCEEDED
    assert Outcome.LOST.value == "lost"
    assert StopReason.SPAWNER_LOST.value == "spawner lost"
