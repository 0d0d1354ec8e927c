"""JSESSIONID cookie: spec §7 (cookie_needed services set `JSESSIONID=<v>; path=/` on every
transport response, echoing the request's value, never on the greeting, iframe, /info,
OPTIONS or WebSocket 101). Checklist rows 29, 30, 31, 32, 33, 34."""

import pytest

from sockjs_client import (GET, POST, OPTIONS, WebSocket, open_stream, url, session_url,
                           assert_jsessionid, assert_no_cookie)

SVC = "/cookie_needed_echo"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_info_reports_cookie_needed_and_sets_no_cookie():
    """Row 29."""
    r = GET(url(SVC + "/info"))
    assert r.status == 200
    assert_no_cookie(r)
    assert r.json()["cookie_needed"] is True


def test_xhr_sets_dummy_cookie_or_echoes_request_cookie():
    """Row 33."""
    s = session_url(SVC)
    r = POST(s + "/xhr")
    assert r.status == 200 and r.body == b"o\n"
    assert_jsessionid(r, "dummy")
    s = session_url(SVC)
    r = POST(s + "/xhr", headers={"Cookie": "JSESSIONID=abcdef"})
    assert r.status == 200 and r.body == b"o\n"
    assert_jsessionid(r, "abcdef")


def test_cookie_value_is_taken_from_among_other_cookies():
    r = POST(session_url(SVC) + "/xhr", headers={"Cookie": "a=b; JSESSIONID=xyz42; c=d"})
    assert_jsessionid(r, "xyz42")


def test_xhr_streaming_sets_cookie():
    """Row 34."""
    with open_stream("POST", session_url(SVC) + "/xhr_streaming", body=b"") as c:
        assert c.response.status == 200
        assert_jsessionid(c.response)


def test_eventsource_sets_cookie():
    """Row 30."""
    with open_stream("GET", session_url(SVC) + "/eventsource") as c:
        assert c.response.status == 200
        assert_jsessionid(c.response)


def test_htmlfile_sets_cookie():
    """Row 31."""
    with open_stream("GET", session_url(SVC) + "/htmlfile?c=%63allback") as c:
        assert c.response.status == 200
        assert_jsessionid(c.response)


def test_jsonp_and_jsonp_send_set_cookie():
    """Row 32."""
    s = session_url(SVC)
    r = GET(s + "/jsonp?c=%63allback")
    assert r.status == 200
    assert_jsessionid(r)
    assert r.body == b'/**/callback("o");\r\n'
    r = POST(s + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert r.status == 200 and r.body == b"ok"
    assert_jsessionid(r)


def test_xhr_send_sets_cookie_echoing_request_value():
    s = session_url(SVC)
    POST(s + "/xhr")
    r = POST(s + "/xhr_send", '["x"]', {"Cookie": "JSESSIONID=abc"})
    assert r.status == 204
    assert_jsessionid(r, "abc")


@pytest.mark.parametrize("make", [
    lambda: POST(session_url(SVC) + "/xhr_send", '["x"]'),            # 404
    lambda: POST(session_url(SVC) + "/xhr_send", '["x'),              # 500
    lambda: GET(session_url(SVC) + "/jsonp"),                         # 500
    lambda: GET(session_url(SVC) + "/htmlfile?c=abc("),               # 500
    lambda: POST(session_url(SVC) + "/jsonp_send", "d=", FORM),       # 500
])
def test_transport_error_responses_set_cookie(make):
    r = make()
    assert r.status in (404, 500)
    assert_jsessionid(r)


def test_cookie_is_never_set_on_greeting_iframe_info_options_or_websocket():
    h = {"Cookie": "JSESSIONID=abc", "Origin": "test"}
    assert_no_cookie(GET(url(SVC), h))
    assert_no_cookie(GET(url(SVC + "/iframe.html"), h))
    assert_no_cookie(GET(url(SVC + "/info"), h))
    assert_no_cookie(OPTIONS(url(SVC + "/info"), h))
    assert_no_cookie(OPTIONS(session_url(SVC) + "/xhr", h))
    with WebSocket(session_url(SVC) + "/websocket", headers={"Cookie": "JSESSIONID=abc"}) as ws:
        assert_no_cookie(ws.response)
    with WebSocket(url(SVC + "/websocket")) as ws:
        assert_no_cookie(ws.response)


def test_no_cookie_when_cookie_needed_is_off():
    s = session_url()
    assert_no_cookie(POST(s + "/xhr", headers={"Cookie": "JSESSIONID=abc"}))
    assert_no_cookie(POST(s + "/xhr_send", '["x"]', {"Cookie": "JSESSIONID=abc"}))
    assert_no_cookie(GET(session_url() + "/jsonp?c=x"))
    with open_stream("GET", session_url() + "/eventsource") as c:
        assert_no_cookie(c.response)
