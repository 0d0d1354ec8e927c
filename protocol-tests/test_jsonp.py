"""JSONP polling and jsonp_send: spec §5.6, §5.7 (body parsing by content type, ok reply)
and the callback rules of §5.10. Checklist rows 35, 36, 37, 38, 39, 40, 41 (row 32 is in
test_jsessionid.py)."""

import time

import pytest

from sockjs_client import (GET, POST, HttpConnection, session_url, host_header,
                           assert_content_type, assert_no_cache, assert_no_cors,
                           assert_no_cookie)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def jsonp(s, cb="x", headers=None):
    return GET(s + "/jsonp?c=" + cb, headers)


def test_jsonp_transport_and_jsonp_send_form_post():
    """Row 41."""
    s = session_url()
    r = jsonp(s, "%63allback", {"Origin": "test"})
    assert r.status == 200
    assert_content_type(r, "application/javascript; charset=UTF-8")
    assert r.header("x-content-type-options") == "nosniff"
    assert_no_cache(r)
    assert_no_cors(r)
    assert_no_cookie(r)
    assert r.body == b'/**/callback("o");\r\n'
    r = POST(s + "/jsonp_send", "d=%5B%22x%22%5D", dict(FORM, Origin="test"))
    assert r.status == 200
    assert r.body == b"ok"
    assert r.header("content-length") == "2"
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)
    assert_no_cors(r)
    assert_no_cookie(r)
    r = jsonp(s, "callback")
    assert r.status == 200
    assert r.body == b'/**/callback("a[\\"x\\"]");\r\n'


def test_jsonp_response_is_delimited_by_content_length():
    s = session_url()
    with HttpConnection() as c:
        r = c.request("GET", s + "/jsonp?c=x")
        assert r.body == b'/**/x("o");\r\n'
        if not r.chunked:
            assert r.header("content-length") == str(len(r.body))


def test_jsonp_send_content_types_form_and_raw_text():
    """Row 36: the form field d is decoded; a text/plain body is not URL-decoded."""
    s = session_url()
    assert jsonp(s).body == b'/**/x("o");\r\n'
    r = POST(s + "/jsonp_send", "d=%5B%22abc%22%5D", FORM)
    assert r.status == 200 and r.body == b"ok"
    r = POST(s + "/jsonp_send", '["%61bc"]', {"Content-Type": "text/plain"})
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"abc\\",\\"%61bc\\"]");\r\n'


def test_jsonp_send_form_content_type_with_charset_is_form_decoded():
    s = session_url()
    jsonp(s)
    r = POST(s + "/jsonp_send", "d=%5B%22a%2Bb+c%22%5D&other=1",
             {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"a+b c\\"]");\r\n'


def test_jsonp_send_without_content_type_parses_raw_body():
    """§5.7: no Content-Type is like text/plain."""
    s = session_url()
    jsonp(s)
    r = POST(s + "/jsonp_send", '["%61bc"]')
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"%61bc\\"]");\r\n'


@pytest.mark.parametrize("ct", ["application/json", "application/xml", "T",
                                "text/plain; charset=UTF-8"])
def test_jsonp_send_other_content_types_are_treated_as_text_plain(ct):
    """§5.7 (ours): any other type parses the raw body as JSON."""
    s = session_url()
    jsonp(s)
    r = POST(s + "/jsonp_send", '["%61bc"]', {"Content-Type": ct})
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"%61bc\\"]");\r\n'


def verify_500(r, text):
    assert r.status == 500, r
    assert text.encode() in r.body, r.body
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)
    assert r.header("content-length") == str(len(r.body))


def test_jsonp_send_invalid_json_and_missing_payload_are_500():
    """Row 38: the session still works afterwards."""
    s = session_url()
    assert jsonp(s).body == b'/**/x("o");\r\n'
    verify_500(POST(s + "/jsonp_send", "d=%5B%22x", FORM), "Broken JSON encoding.")
    for body in ["", "d=", "p=p"]:
        verify_500(POST(s + "/jsonp_send", body, FORM), "Payload expected.")
    r = POST(s + "/jsonp_send", "d=%5B%22b%22%5D", FORM)
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"b\\"]");\r\n'


@pytest.mark.parametrize("body", ["", "null", "{}", '"x"'])
def test_jsonp_send_raw_body_that_is_empty_or_not_an_array_is_payload_expected(body):
    s = session_url()
    jsonp(s)
    verify_500(POST(s + "/jsonp_send", body, {"Content-Type": "text/plain"}),
               "Payload expected.")


def test_jsonp_send_raw_broken_json_and_invalid_utf8_are_500():
    s = session_url()
    jsonp(s)
    verify_500(POST(s + "/jsonp_send", '["x', {"Content-Type": "text/plain"}),
               "Broken JSON encoding.")
    verify_500(POST(s + "/jsonp_send", b'["\xff"]', {"Content-Type": "text/plain"}),
               "Broken JSON encoding.")


def test_jsonp_send_errors_carry_no_cors():
    s = session_url()
    r = POST(s + "/jsonp_send", "d=%5B%22x", dict(FORM, Origin="test"))
    assert r.status == 500
    assert_no_cors(r)
    r = POST(s + "/jsonp_send", "d=%5B%22x%22%5D", dict(FORM, Origin="test"))
    assert r.status == 404
    assert_no_cors(r)
    assert_no_cache(r)
    assert_content_type(r, "text/plain; charset=UTF-8")


def test_jsonp_send_to_unknown_session_is_404():
    r = POST(session_url() + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert r.status == 404


def test_jsonp_send_empty_array_is_ok():
    """Row 40."""
    s = session_url()
    assert jsonp(s).body == b'/**/x("o");\r\n'
    r = POST(s + "/jsonp_send", "d=%5B%5D", FORM)
    assert r.status == 200 and r.body == b"ok"
    r = POST(s + "/jsonp_send", "d=%5B%22x%22%5D", FORM)
    assert r.status == 200 and r.body == b"ok"
    assert jsonp(s).body == b'/**/x("a[\\"x\\"]");\r\n'


def test_jsonp_send_body_over_max_inbound_bytes_is_413():
    s = session_url()
    jsonp(s)
    size = 1024 * 1024 + 1
    body = b'["' + b"x" * (size - 4) + b'"]'
    with HttpConnection() as c:
        c.send_raw(("POST %s/jsonp_send HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %d\r\n\r\n" % (s, host_header(), size)).encode())
        try:
            for i in range(0, size, 65536):
                c.send_raw(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert c.read_head().status == 413


def test_jsonp_on_close_service_sends_o_then_close_frame_twice():
    """Row 35."""
    s = session_url("/close")
    assert jsonp(s).body == b'/**/x("o");\r\n'
    assert jsonp(s).body == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'
    assert jsonp(s).body == b'/**/x("c[3000,\\"Go away!\\"]");\r\n'


@pytest.mark.parametrize("cb", ["%20", "*", "abc(", "abc%28", "", "a" * 33])
def test_jsonp_invalid_callback_is_500(cb):
    """Row 37."""
    r = GET(session_url() + "/jsonp?c=" + cb)
    verify_500(r, 'invalid "callback" parameter')


def test_jsonp_missing_callback_is_500():
    """Row 39."""
    r = GET(session_url() + "/jsonp")
    verify_500(r, '"callback" parameter required')
    r = GET(session_url() + "/jsonp?cb=x&d=1")
    verify_500(r, '"callback" parameter required')


def test_jsonp_bad_callback_creates_no_session():
    s = session_url()
    assert GET(s + "/jsonp?c=abc%28").status == 500
    assert POST(s + "/jsonp_send", "d=%5B%22x%22%5D", FORM).status == 404


@pytest.mark.parametrize("query,cb", [
    ("?callback=cb1", "cb1"),
    ("?c=first&c=second", "first"),
    ("?callback=other&c=chosen", "chosen"),
    ("?c=_jp.a1b2c3d", "_jp.a1b2c3d"),
    ("?c=" + "A" * 32, "A" * 32),
    ("?t=1&c=%5Fx%2Dy%2E", "_x-y."),
])
def test_jsonp_callback_parameter_rules(query, cb):
    """§5.10: c, else callback; first occurrence; URL-decoded; up to 32 of [a-zA-Z0-9_.-]."""
    r = GET(session_url() + "/jsonp" + query)
    assert r.status == 200
    assert r.body == ('/**/%s("o");\r\n' % cb).encode()


def test_jsonp_second_concurrent_poll_gets_2010():
    """§6.3 on jsonp: the attached receiver is not affected."""
    s = session_url()
    assert jsonp(s).body == b'/**/x("o");\r\n'
    with HttpConnection() as pending:
        pending.send_request("GET", s + "/jsonp?c=x")
        time.sleep(0.2)
        r = jsonp(s, "y")
        assert r.body == b'/**/y("c[2010,\\"Another connection still open\\"]");\r\n'
        assert POST(s + "/jsonp_send", "d=%5B%22z%22%5D", FORM).body == b"ok"
        pending.read_head()
        assert pending.read_body() == b'/**/x("a[\\"z\\"]");\r\n'
