"""The /info endpoint: spec §2.2 (body fields, headers, answered at once) and its preflight
(§8.2). Checklist rows 22, 23, 24, 25, 26 (row 29 is in test_jsessionid.py)."""

import time

import pytest

from sockjs_client import (GET, OPTIONS, url, assert_content_type, assert_no_cache,
                           assert_cors, assert_no_cookie, assert_one_year_cache)


def test_info_returns_json_with_required_fields():
    """Row 22."""
    r = GET(url("/echo/info"), headers={"Origin": "test"})
    assert r.status == 200
    assert_content_type(r, "application/json; charset=UTF-8")
    assert_no_cookie(r)
    assert_no_cache(r)
    assert_cors(r, "test")
    data = r.json()
    assert data["websocket"] is True
    assert data["cookie_needed"] is False
    assert data["origins"] == ["*:*"]
    assert isinstance(data["entropy"], int) and not isinstance(data["entropy"], bool)
    assert 0 <= data["entropy"] <= 2 ** 32 - 1


def test_info_has_content_length():
    r = GET(url("/echo/info"))
    assert r.header("content-length") == str(len(r.body))


def test_info_optional_fields_have_the_right_shape():
    data = GET(url("/echo/info")).json()
    if "transports" in data:
        assert isinstance(data["transports"], list)
        assert all(isinstance(t, str) for t in data["transports"])
    assert "base_url" not in data  # not configured in the test services


def test_info_reports_websocket_disabled():
    """Row 23."""
    r = GET(url("/disabled_websocket_echo/info"))
    assert r.status == 200
    assert r.json()["websocket"] is False


def test_info_reports_cookie_needed_without_setting_cookie():
    r = GET(url("/cookie_needed_echo/info"))
    assert r.status == 200
    assert r.json()["cookie_needed"] is True
    assert_no_cookie(r)


def test_info_entropy_differs_between_requests():
    """Row 24."""
    values = {GET(url("/echo/info")).json()["entropy"] for _ in range(5)}
    assert len(values) >= 4
    assert all(isinstance(v, int) for v in values)


def test_info_is_answered_at_once():
    for _ in range(3):
        start = time.monotonic()
        r = GET(url("/echo/info"))
        assert r.status == 200
        assert time.monotonic() - start < 0.5


@pytest.mark.parametrize("origin", ["test", "null"])
def test_info_options_is_a_preflight(origin):
    """Rows 25 and 26: 204 (or 200), empty body, CORS echo, OPTIONS + GET, one-year caching."""
    r = OPTIONS(url("/echo/info"), headers={"Origin": origin})
    assert r.status in (200, 204)
    assert r.body == b""
    assert_cors(r, origin)
    methods = [m.strip() for m in r.header("access-control-allow-methods", "").split(",")]
    assert set(methods) >= {"OPTIONS", "GET"}
    assert r.header("access-control-allow-methods") == "OPTIONS, GET"
    assert int(r.header("access-control-max-age")) > 1000000
    assert r.header("access-control-max-age") == "31536000"
    assert_one_year_cache(r)
    assert not r.has("content-type")
    assert_no_cookie(r)


def test_info_options_without_origin_answers_star():
    r = OPTIONS(url("/echo/info"))
    assert r.status in (200, 204)
    assert_cors(r, None)


def test_info_options_on_cookie_needed_service_sets_no_cookie():
    r = OPTIONS(url("/cookie_needed_echo/info"), headers={"Origin": "test"})
    assert r.status in (200, 204)
    assert_no_cookie(r)


def test_info_null_origin_is_echoed_with_credentials():
    r = GET(url("/echo/info"), headers={"Origin": "null"})
    assert r.status == 200
    assert_cors(r, "null")
