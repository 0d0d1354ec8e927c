"""URL scheme and routing: spec §1 (services, route table, ids, 404/405/400) and the greeting
of §2.1. Checklist rows 1, 2, 46, 47, 48 (and 56-58 for the websocket route, see
test_websocket.py)."""

import pytest

from sockjs_client import (GET, POST, OPTIONS, request, session_url, new_id, url,
                           assert_content_type, assert_no_cookie)

GREETING = b"Welcome to SockJS!\n"


@pytest.mark.parametrize("path", ["/echo", "/echo/"])
def test_greeting_at_prefix_with_and_without_slash(path):
    """Row 1."""
    r = GET(url(path))
    assert r.status == 200
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert r.body == GREETING
    assert len(GREETING) == 19
    assert_no_cookie(r)


def test_greeting_sets_no_cookie_even_when_cookie_needed():
    r = GET(url("/cookie_needed_echo"))
    assert r.status == 200
    assert r.body == GREETING
    assert_no_cookie(r)


@pytest.mark.parametrize("suffix", ["/a", "/a.html", "//", "///", "/a/a", "/a/a/", "/a/"])
def test_unknown_paths_under_prefix_are_404(suffix):
    """Row 2."""
    r = GET(url("/echo" + suffix))
    assert r.status == 404


def test_404_has_plain_text_body_and_content_length():
    r = GET(url("/echo/a/a"))
    assert r.status == 404
    assert_content_type(r, "text/plain; charset=UTF-8")
    assert r.body == b"404 Error: Page not found\n"
    assert r.header("content-length") == str(len(r.body))


def test_path_matching_no_service_is_404():
    r = GET(url("/no_such_service_%s" % new_id()))
    assert r.status == 404


def test_prefix_must_be_followed_by_slash():
    assert GET(url("/echoo")).status == 404
    assert GET(url("/echo_x/info")).status == 404


def test_routing_uses_raw_path_without_percent_decoding():
    # %2F is not a path separator, so this is no service at all.
    assert GET(url("/echo%2Finfo")).status == 404
    # %69 is 'i': no decoding, so it is not the info route.
    assert GET(url("/echo/%69nfo")).status == 404


def test_routing_does_no_dot_segment_removal_or_slash_merging():
    assert GET(url("/echo/./info")).status == 404
    assert GET(url("/echo//info")).status == 404
    assert GET(url("/x/../echo/info")).status == 404


def test_query_string_is_ignored_for_routing():
    r = GET(url("/echo/info?t=123&x=/y"))
    assert r.status == 200
    r = GET(url("/echo?x=1"))
    assert r.status == 200 and r.body == GREETING


@pytest.mark.parametrize("route", ["/info/", "/iframe.html/"])
def test_routes_accept_one_trailing_slash(route):
    assert GET(url("/echo" + route)).status == 200


def test_session_routes_accept_one_trailing_slash():
    s = session_url()
    r = POST(s + "/xhr/")
    assert r.status == 200 and r.body == b"o\n"
    r = POST(s + "/xhr_send/", '["x"]')
    assert r.status == 204
    r = POST(s + "/xhr")
    assert r.body == b'a["x"]\n'


def test_two_trailing_slashes_are_404():
    assert GET(url("/echo/info//")).status == 404


@pytest.mark.parametrize("suffix", ["//xhr", "///xhr", "////xhr", "/a./a/xhr", "/a/a./xhr",
                                    "/././xhr", "/a/./xhr", "/./a/xhr"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_empty_ids_or_ids_with_dot_are_404(method, suffix):
    """Row 48."""
    r = request(method, url("/echo" + suffix))
    assert r.status == 404


@pytest.mark.parametrize("server,session", [
    ("a", "a{id}"), ("_", "_{id}"), ("1", "{id}"),
    ("abcdefgh_i-j%20", "abcdefg_i-j%20{id}"), ("~!$&'()*+,;=:@", "x{id}"), ("%2F", "%41{id}"),
])
def test_any_id_value_opens_a_session(server, session):
    """Row 46: any byte except '/' and '.' is allowed in ids, including a raw %20."""
    r = POST(url("/echo/%s/%s/xhr" % (server, session.replace("{id}", new_id()))))
    assert r.status == 200
    assert r.body == b"o\n"


def test_ids_are_not_percent_decoded():
    sid = new_id()
    r = POST(url("/echo/000/%s%%41/xhr" % sid))
    assert r.body == b"o\n"
    # "<sid>A" is a different session from "<sid>%41".
    r = POST(url("/echo/000/%sA/xhr_send" % sid), '["x"]')
    assert r.status == 404
    r = POST(url("/echo/000/%s%%41/xhr_send" % sid), '["x"]')
    assert r.status == 204


def test_server_id_is_ignored():
    """Row 47: a session opened via /000/<id> is reached via /999/<id>."""
    sid = new_id()
    r = POST(url("/echo/000/%s/xhr" % sid))
    assert r.body == b"o\n"
    r = POST(url("/echo/999/%s/xhr_send" % sid), '["a"]')
    assert r.status == 204
    r = POST(url("/echo/abc/%s/xhr" % sid))
    assert r.body == b'a["a"]\n'


ALLOWS = [
    ("POST", "/echo/0/0/websocket", "GET"),
    ("PUT", "/echo/0/0/websocket", "GET"),
    ("GET", "/echo/a/a/xhr", "POST, OPTIONS"),
    ("GET", "/echo/a/a/xhr_send", "POST, OPTIONS"),
    ("GET", "/echo/a/a/xhr_streaming", "POST, OPTIONS"),
    ("POST", "/echo/info", "GET, OPTIONS"),
    ("DELETE", "/echo/info", "GET, OPTIONS"),
    ("POST", "/echo/a/a/eventsource", "GET"),
    ("POST", "/echo/a/a/htmlfile", "GET"),
    ("POST", "/echo/a/a/jsonp", "GET"),
    ("GET", "/echo/a/a/jsonp_send", "POST"),
    ("POST", "/echo/iframe.html", "GET"),
    ("POST", "/echo/websocket", "GET"),
    ("POST", "/echo", "GET"),
]


@pytest.mark.parametrize("method,path,allow", ALLOWS)
def test_wrong_method_is_405_with_allow_and_no_content_type(method, path, allow):
    """§1.3: Allow lists the route's methods; no Content-Type; empty body, Content-Length 0."""
    r = request(method, url(path), body=b"" if method in ("POST", "PUT") else None)
    assert r.status == 405
    assert r.header("allow") == allow
    assert not r.has("content-type"), r.header("content-type")
    assert r.body == b""
    assert r.header("content-length") == "0"


def test_405_does_not_create_a_session():
    s = session_url()
    assert GET(s + "/xhr").status == 405
    assert POST(s + "/xhr_send", '["x"]').status == 404


def test_options_is_not_allowed_on_get_only_routes():
    r = OPTIONS(url("/echo/a/a/jsonp"))
    assert r.status == 405
    assert r.header("allow") == "GET"


@pytest.mark.parametrize("path", ["/disabled_websocket_echo/0/0/websocket",
                                  "/disabled_websocket_echo/websocket"])
def test_websocket_routes_are_404_when_websocket_disabled(path):
    r = GET(url(path))
    assert r.status == 404
    r = GET(url(path), headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                "Sec-WebSocket-Key": "x3JJHMbDL1EzLkh9GBhXDw==",
                                "Sec-WebSocket-Version": "13"})
    assert r.status == 404
    r = POST(url(path), b"")
    assert r.status == 404


def test_other_transports_work_when_websocket_disabled():
    s = url("/disabled_websocket_echo/000/" + new_id())
    r = POST(s + "/xhr")
    assert r.body == b"o\n"
