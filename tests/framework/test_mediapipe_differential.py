"""Differential tests: every case of ``mediapipe_cases`` must behave in ovgraph as in MediaPipe.

MediaPipe's result comes from the oracle (``mediapipe_oracle``): the committed cache, or a live run
of MediaPipe 0.10.21 in its own venv. Valid cases must produce the same packets at the same
timestamps on every observed stream; invalid cases must raise the ovgraph class that
``expected_error_class`` maps MediaPipe's message to, with the case's key phrases in its text.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mediapipe_cases import (
    CASES,
    INVALID_CASES,
    VALID_CASES,
    Case,
    expected_error_class,
)
from mediapipe_oracle import (
    OracleUnavailable,
    cached_result,
    case_key,
    oracle,
)

pytestmark = pytest.mark.mediapipe


def _ids(cases: tuple[Case, ...]) -> list[str]:
    return [case.name for case in cases]


def _mediapipe(case: Case) -> dict[str, Any]:
    try:
        return oracle(case.payload, case.name)
    except OracleUnavailable as exc:
        pytest.skip(f"MediaPipe oracle unavailable: {exc}")


def _typed_packets(packets: Any, keep_empty: bool) -> list[tuple[int, str, Any]]:
    """Return ``[(timestamp, type name, value)]``; empty packets dropped unless ``keep_empty``."""
    result = []
    for timestamp, value in packets:
        if value is None and not keep_empty:
            continue
        result.append((int(timestamp), type(value).__name__, value))
    return result


def _expected_outputs(case: Case, result: dict[str, Any]) -> dict[str, list]:
    outputs = result["outputs"]
    return {s: _typed_packets(outputs.get(s, []), case.observe_bounds) for s in case.observe}


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@pytest.fixture(scope="module")
def run_graph():
    from ovgraph.testing import run_graph as runner

    return runner


def _call(run_graph, case: Case) -> dict[str, list]:
    kwargs = case.run_graph_kwargs()
    if case.observe_bounds:
        kwargs["observe_timestamp_bounds"] = True
    return run_graph(**kwargs, timeout=10.0)


@pytest.mark.parametrize("case", VALID_CASES, ids=_ids(VALID_CASES))
def test_valid_case_matches_mediapipe(case: Case, run_graph) -> None:
    expected = _mediapipe(case)
    assert expected["error"] is None, f"MediaPipe failed on a valid case: {expected['error']}"
    got = _call(run_graph, case)
    actual = {s: _typed_packets(got.get(s, []), case.observe_bounds) for s in case.observe}
    assert actual == _expected_outputs(case, expected)


@pytest.mark.parametrize("case", INVALID_CASES, ids=_ids(INVALID_CASES))
def test_invalid_case_fails_like_mediapipe(case: Case, run_graph) -> None:
    expected = _mediapipe(case)
    assert expected["error"] is not None, "MediaPipe accepted a case listed as invalid"
    message = expected["error"]["message"]
    try:
        _call(run_graph, case)
    except Exception as exc:
        raised = _first_error(exc)
    else:
        pytest.fail(f"ovgraph accepted the case; MediaPipe said: {message}")
    assert type(raised).__name__ == expected_error_class(message), str(raised)
    for phrase in case.phrases:
        assert phrase in str(raised), f"{phrase!r} missing from {raised}"


def test_oracle_cache_complete() -> None:
    missing = [case.name for case in CASES if cached_result(case.payload) is None]
    assert not missing, (
        "cases without a recorded MediaPipe result (run "
        f"`python tests/framework/mediapipe_oracle.py --record`): {missing}"
    )


def test_case_names_and_keys_unique() -> None:
    assert len({case.name for case in CASES}) == len(CASES)
    assert len({case_key(case.payload) for case in CASES}) == len(CASES)
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_recorded_result_fits_case(case: Case) -> None:
    """The recorded MediaPipe result agrees with how the case is classified and phrased."""
    result = cached_result(case.payload)
    if result is None:
        pytest.skip("no recorded result (see test_oracle_cache_complete)")
    assert result["returncode"] == 0
    if case in VALID_CASES:
        assert result["error"] is None
        assert set(result["outputs"]) == set(case.observe)
    else:
        error = result["error"]
        assert error is not None
        assert error["phase"] in ("init", "run")
        expected_error_class(error["message"])  # raises when the table has no row for it
        for phrase in case.phrases:
            assert phrase in error["message"]


@pytest.mark.parametrize(
    ("message", "class_name"),
    [
        (
            "ValidatedGraphConfig Initialization failed.\nNo registered object with name: "
            'FooCalculator; Unable to find Calculator "FooCalculator"',
            "CalculatorNotFoundError",
        ),
        ('; Output Stream "out" defined twice.', "ValidationError"),
        (
            "ValidatedGraphConfig Initialization failed.\nPassThroughCalculator: Input and output "
            "streams to PassThroughCalculator must use matching tags and indexes.",
            "ContractError",
        ),
        (
            'CalculatorGraph::Run() failed: \nCalculator::Open() for node "x" failed: boom',
            "CalculatorError",
        ),
        (
            "CalculatorGraph::Run() failed: \n; Packet timestamp mismatch on a calculator "
            'receiving from stream "in". Current minimum expected timestamp is 6 but received 5.',
            "RequestError",
        ),
        (
            "CalculatorGraph::InitializeCalculatorNodes failed: \nNo registered object with name: "
            'X; "X" is not a registered input stream handler.',
            "ValidationError",
        ),
        ("Failed to parse: node {", "GraphConfigError"),
    ],
)
def test_expected_error_class_table(message: str, class_name: str) -> None:
    assert expected_error_class(message) == class_name


def test_expected_error_class_rejects_unknown_text() -> None:
    with pytest.raises(ValueError, match="no error class"):
        expected_error_class("something nobody has seen")
