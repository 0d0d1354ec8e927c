"""xhr polling and xhr_send: spec §5.1 and §5.2 (plus §3.3 payloads and the xhr rows of the
§8.4 header matrix). Checklist rows 43, 59, 60, 61, 64, 65 (rows 62 and 63 are in
test_cors.py, row 69 in test_http.py)."""

import json
import time

import pytest

from sockjs_client import (POST, OPTIONS, HttpConnection, session_url, url, new_id,
                           host_header,
                           assert_content_type, assert_no_cache, assert_cors, assert_no_cookie)

MAX_INBOUND = 1024 * 1024


def test_xhr_poll_opens_session_with_o_frame():
    """Row 65, first request."""
    s = session_url()
    r = POST(s + "/xhr", headers={"Origin": "test"})
    assert r.status == 200
    assert r.body == b"o\n"
    assert_content_type(r, "application/javascript; charset=UTF-8")
    assert_cors(r, "test")
    assert_no_cache(r)
    assert_no_cookie(r)


def test_xhr_send_returns_204_text_plain_and_poll_delivers_message():
    """Row 65."""
    s = session_url()
    assert POST(s + "/xhr", headers={"Origin": "test"}).body == b"o\n"
    r = POST(s + "/xhr_send", '["x"]', headers={"Origin": "test"})
    assert r.status == 204
    assert r.body == b""
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_cors(r, "test")
    assert_no_cache(r)
    assert not r.has("content-length") or r.header("content-length") == "0"
    r = POST(s + "/xhr", headers={"Origin": "test"})
    assert r.status == 200
    assert r.body == b'a["x"]\n'


def test_xhr_send_204_has_no_content_length():
    """§9: 204 has no body and no Content-Length."""
    s = session_url()
    POST(s + "/xhr")
    r = POST(s + "/xhr_send", '["x"]')
    assert r.status == 204
    assert not r.has("content-length")


def test_simple_session_send_poll_bad_session_and_2010():
    """Row 43."""
    s = session_url()
    r = POST(s + "/xhr")
    assert r.status == 200 and r.body == b"o\n"
    r = POST(s + "/xhr_send", '["a"]')
    assert r.status == 204 and r.body == b""
    r = POST(s + "/xhr")
    assert r.status == 200 and r.body == b'a["a"]\n'
    r = POST(url("/echo/000/bad_session_%s/xhr_send" % new_id()), '["a"]')
    assert r.status == 404
    # A pending poll, then a concurrent one.
    with HttpConnection() as pending:
        pending.send_request("POST", s + "/xhr", body=b"")
        time.sleep(0.2)
        r = POST(s + "/xhr")
        assert r.status == 200
        assert r.body == b'c[2010,"Another connection still open"]\n'
        # The attached receiver is not affected.
        assert POST(s + "/xhr_send", '["b"]').status == 204
        pending.read_head()
        assert pending.response.status == 200
        assert pending.read_body() == b'a["b"]\n'


def test_pending_poll_receives_message_at_once():
    s = session_url()
    POST(s + "/xhr")
    with HttpConnection() as pending:
        pending.send_request("POST", s + "/xhr", body=b"")
        time.sleep(0.1)
        start = time.monotonic()
        assert POST(s + "/xhr_send", '["now"]').status == 204
        pending.read_head()
        assert pending.read_body() == b'a["now"]\n'
        assert time.monotonic() - start < 0.5


CONTENT_TYPES = ["text/plain", "T", "application/json", "application/xml", "",
                 "application/json; charset=utf-8", "text/xml; charset=utf-8", "text/xml"]


def test_xhr_send_accepts_any_request_content_type():
    """Row 59: 8 content types, all 204; one poll returns all 8 messages in one frame."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    for ct in CONTENT_TYPES:
        r = POST(s + "/xhr_send", '["%s"]' % ct, headers={"Content-Type": ct})
        assert r.status == 204, (ct, r)
        assert r.body == b""
    r = POST(s + "/xhr")
    assert r.status == 200
    assert r.body == ("a" + json.dumps(CONTENT_TYPES, separators=(",", ":")) + "\n").encode()


def verify_error(r, status, text, origin=None):
    assert r.status == status, r
    assert text.encode() in r.body, r.body
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)
    assert r.header("content-length") == str(len(r.body))
    assert_cors(r, origin)


def test_xhr_send_invalid_json_is_500_and_session_survives():
    """Row 60."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    verify_error(POST(s + "/xhr_send", '["x'), 500, "Broken JSON encoding.")
    verify_error(POST(s + "/xhr_send", '["x', headers={"Origin": "test"}), 500,
                 "Broken JSON encoding.", origin="test")
    verify_error(POST(s + "/xhr_send", ""), 500, "Payload expected.")
    r = POST(s + "/xhr_send", '["a"]')
    assert r.status == 204
    assert POST(s + "/xhr").body == b'a["a"]\n'


def test_xhr_send_error_bodies_are_exact():
    s = session_url()
    POST(s + "/xhr")
    assert POST(s + "/xhr_send", '["x').body == b"Broken JSON encoding."
    assert POST(s + "/xhr_send", "").body == b"Payload expected."


def test_xhr_send_without_body_is_payload_expected():
    s = session_url()
    POST(s + "/xhr")
    r = POST(s + "/xhr_send")  # no Content-Length, no body
    verify_error(r, 500, "Payload expected.")


@pytest.mark.parametrize("body", ["null", "{}", '{"a":"b"}', '"x"', "1", "true"])
def test_xhr_send_json_that_is_not_an_array_is_payload_expected(body):
    s = session_url()
    POST(s + "/xhr")
    verify_error(POST(s + "/xhr_send", body), 500, "Payload expected.")


def test_xhr_send_invalid_utf8_is_broken_json_encoding():
    s = session_url()
    POST(s + "/xhr")
    verify_error(POST(s + "/xhr_send", b'["\xff\xfe"]'), 500, "Broken JSON encoding.")
    assert POST(s + "/xhr_send", '["ok"]').status == 204


def test_xhr_send_to_unknown_session_is_404():
    """Row 61."""
    r = POST(session_url() + "/xhr_send", '["x"]', headers={"Origin": "test"})
    assert r.status == 404
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert_no_cache(r)
    assert_cors(r, "test")
    assert r.header("content-length") == str(len(r.body))


def test_xhr_send_validates_body_before_looking_up_session():
    s = session_url()
    assert POST(s + "/xhr_send", '["x').status == 500
    assert POST(s + "/xhr_send", "").status == 500
    assert POST(s + "/xhr_send", "null").status == 500
    assert POST(s + "/xhr_send", '["x"]').status == 404


def test_xhr_send_never_creates_a_session():
    s = session_url()
    assert POST(s + "/xhr_send", '["x"]').status == 404
    assert POST(s + "/xhr_send", '["x"]').status == 404
    assert POST(s + "/xhr").body == b"o\n"


def test_xhr_send_empty_array_is_accepted_and_does_nothing():
    """Row 64."""
    s = session_url()
    assert POST(s + "/xhr").body == b"o\n"
    r = POST(s + "/xhr_send", "[]")
    assert r.status == 204 and r.body == b""
    r = POST(s + "/xhr_send", '["a"]')
    assert r.status == 204 and r.body == b""
    assert POST(s + "/xhr").body == b'a["a"]\n'


def test_messages_queued_while_detached_are_flushed_in_one_frame_in_order():
    """§6.4."""
    s = session_url()
    POST(s + "/xhr")
    for m in ["1", "2", "3"]:
        assert POST(s + "/xhr_send", json.dumps([m])).status == 204
    assert POST(s + "/xhr_send", '["4","5"]').status == 204
    assert POST(s + "/xhr").body == b'a["1","2","3","4","5"]\n'


def test_non_string_elements_are_delivered_as_compact_json_text():
    """§3.3 (ours): numbers, objects and null arrive as their compact JSON text."""
    s = session_url()
    POST(s + "/xhr")
    assert POST(s + "/xhr_send", '[1, {"a": [2, 3]}, null, true, "s"]').status == 204
    r = POST(s + "/xhr")
    assert r.body == b'a["1","{\\"a\\":[2,3]}","null","true","s"]\n'


def test_xhr_poll_ignores_request_body():
    s = session_url()
    r = POST(s + "/xhr", "this is not json")
    assert r.status == 200 and r.body == b"o\n"


def test_xhr_poll_works_without_origin_and_answers_star():
    r = POST(session_url() + "/xhr")
    assert r.body == b"o\n"
    assert_cors(r, None)


def test_xhr_response_is_delimited():
    s = session_url()
    with HttpConnection() as c:
        r = c.request("POST", s + "/xhr", body=b"")
        assert r.body == b"o\n"
        if not r.chunked:
            assert r.header("content-length") == "2"
        else:
            assert r.chunk_size_lines == [b"2", b"0"]


def _post_large(path, size):
    """POST a JSON body of exactly ``size`` bytes, streamed after the head; the server may
    answer (and stop reading) early."""
    body = b'["' + b"x" * (size - 4) + b'"]'
    assert len(body) == size
    with HttpConnection() as c:
        c.send_raw(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %d\r\n\r\n" % (path, host_header(), size)).encode())
        try:
            for i in range(0, size, 65536):
                c.send_raw(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.read_head()
        c.read_body()
        return c.response


def test_xhr_send_body_over_max_inbound_bytes_is_413():
    """§5.2 step 1: bodies over max_inbound_bytes (1 MiB) get 413."""
    s = session_url()
    POST(s + "/xhr")
    r = _post_large(s + "/xhr_send", MAX_INBOUND + 1)
    assert r.status == 413


def test_xhr_send_body_of_exactly_max_inbound_bytes_is_accepted():
    s = session_url()
    POST(s + "/xhr")
    r = _post_large(s + "/xhr_send", MAX_INBOUND)
    # The echo itself overflows max_queued_bytes (512 KiB); see test_sessions.py.
    assert r.status == 204


def test_xhr_send_chunked_body_over_max_is_413():
    s = session_url()
    POST(s + "/xhr")
    with HttpConnection() as c:
        c.send_raw(("POST %s/xhr_send HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                    % (s, host_header())).encode())
        try:
            c.send_raw(b"2\r\n[\"\r\n")
            chunk = b"x" * 65536
            for _ in range(MAX_INBOUND // 65536 + 1):
                c.send_raw(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            c.send_raw(b"2\r\n\"]\r\n0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.read_head()
        assert c.response.status == 413


def test_xhr_send_chunked_body_is_read():
    s = session_url()
    POST(s + "/xhr")
    with HttpConnection() as c:
        c.send_raw(("POST %s/xhr_send HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\n[\"a\r\n2\r\n\"]\r\n0\r\n\r\n" % (s, host_header())).encode())
        c.read_head()
        assert c.response.status == 204
    assert POST(s + "/xhr").body == b'a["a"]\n'


def test_xhr_options_does_not_create_a_session():
    s = session_url()
    r = OPTIONS(s + "/xhr", headers={"Origin": "test"})
    assert r.status in (200, 204)
    assert POST(s + "/xhr_send", '["x"]').status == 404


def test_xhr_send_to_closed_session_is_accepted_and_discarded():
    """§5.2: a session that is closing gets 204 and the messages are dropped."""
    s = session_url("/close")
    assert POST(s + "/xhr").body == b"o\n"
    r = POST(s + "/xhr_send", '["x"]')
    assert r.status == 204
    assert POST(s + "/xhr").body == b'c[3000,"Go away!"]\n'
