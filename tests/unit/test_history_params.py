"""Parameter parsing of the HTTP functions, without services: bounds, formats, cursors."""

from __future__ import annotations

from datetime import date

import pytest
from starlette.requests import Request

from chat.contract import ContractError, ErrorCode
from functions import search
from functions.web import MAX_BIGINT, date_param, int_param, room_param


def _request(query: str = "", room: str = "lobby") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": f"/rooms/{room}/messages",
            "query_string": query.encode(),
            "headers": [],
            "path_params": {"room": room},
        }
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", 50), ("limit=1", 1), ("limit=200", 200), ("limit=007", 7)],
)
def test_int_param_accepts_plain_integers_in_range(query: str, expected: int) -> None:
    assert int_param(_request(query), "limit", 1, 200, 50) == expected


@pytest.mark.parametrize(
    "raw", ["0", "201", "-1", "1.5", "1e3", " 5", "+5", "5_0", "", "٣", "9" * 30]
)
def test_int_param_refuses_everything_else(raw: str) -> None:
    with pytest.raises(ContractError) as caught:
        int_param(_request(f"limit={raw}"), "limit", 1, 200, 50)
    assert caught.value.code == ErrorCode.INVALID_PARAMETER


def test_int_param_bounds_default_to_bigint() -> None:
    assert int_param(_request(f"before_seq={MAX_BIGINT}"), "before_seq", 1) == MAX_BIGINT
    with pytest.raises(ContractError):
        int_param(_request(f"before_seq={MAX_BIGINT + 1}"), "before_seq", 1)


def test_date_param() -> None:
    default = date(2026, 1, 1)
    assert date_param(_request(""), "since", default) == default
    assert date_param(_request("since=2024-02-29"), "since", default) == date(2024, 2, 29)
    for raw in ("2023-02-29", "20240101", "2024-1-1", "2024-01-01T00:00"):
        with pytest.raises(ContractError):
            date_param(_request(f"since={raw}"), "since", default)


def test_room_param() -> None:
    assert room_param(_request(room="a.b:c-d_e")) == "a.b:c-d_e"
    with pytest.raises(ContractError) as caught:
        room_param(_request(room="no room"))
    assert caught.value.code == ErrorCode.INVALID_ROOM


def test_search_cursor_round_trips_exactly() -> None:
    rank = 0.0607927106320858  # a float4 value, as ts_rank returns it
    cursor = search.encode_cursor(rank, 42)
    back_rank, back_seq = search.decode_cursor(cursor)
    assert back_seq == 42
    assert search.encode_cursor(back_rank, back_seq) == cursor


@pytest.mark.parametrize("raw", ["", "x", "AAAA", "!!!!", search.encode_cursor(1.0, 0)])
def test_search_cursor_refuses_foreign_values(raw: str) -> None:
    with pytest.raises(ContractError):
        search.decode_cursor(raw)
