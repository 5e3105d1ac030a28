"""Error mapping, and the promise that the API key never leaks into errors, reprs or logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from robofy_etl.api import (
    ClientConfig,
    RobofyAPIError,
    RobofyAuthError,
    RobofyClient,
    RobofyContractError,
    RobofyError,
    RobofyNotFoundError,
    RobofyPermissionError,
    RobofyRateLimitError,
    RobofyServerError,
    RobofyTimeoutError,
    RobofyTransportError,
)
from robofy_etl.api.errors import api_error_from_response

from .conftest import BASE_URL
from .fakes import FakeRobofy

PATH = "/v1/ai-agent/chatbot/3"


@pytest.mark.parametrize(
    ("status", "error", "hint"),
    [
        (400, RobofyAPIError, "rejected the request"),
        (401, RobofyAuthError, "ROBOFY_AUTH_HEADER"),
        (403, RobofyPermissionError, "not a wrong key"),
        (404, RobofyNotFoundError, PATH),
        (429, RobofyRateLimitError, "ROBOFY_MAX_IN_FLIGHT"),
        (500, RobofyServerError, "try again later"),
        (503, RobofyServerError, "HTTP 503"),
        (301, RobofyAPIError, "ROBOFY_BASE_URL"),
    ],
)
def test_status_mapping(status: int, error: type, hint: str) -> None:
    body = b'{"message": "m", "error": {"code": "C", "details": "D"}}'
    exc = api_error_from_response(status, body, PATH)
    assert type(exc) is error
    assert (exc.status, exc.error_code, exc.detail, exc.api_message, exc.path) == (
        status,
        "C",
        "D",
        "m",
        PATH,
    )
    assert hint in str(exc)


@pytest.mark.parametrize(
    "body", [b"", b"<html>Bad gateway</html>", b"[]", b'{"error": null}', b'{"message": 5}']
)
def test_unreadable_error_bodies_still_map(body: bytes) -> None:
    exc = api_error_from_response(502, body, PATH)
    assert isinstance(exc, RobofyServerError)
    assert exc.error_code is None
    assert exc.detail is None


def test_auth_message_is_actionable() -> None:
    exc = api_error_from_response(401, b"", "/v1/projects")
    assert str(exc).startswith(
        "Robofy rejected the API key (HTTP 401 on /v1/projects). Check ROBOFY_API_KEY "
        "(and ROBOFY_AUTH_HEADER if your account uses the api-key header)."
    )


def test_403_is_a_permission_not_a_bad_key() -> None:
    path = "/v1/ai-agent/inbox/sessions/bot-7"
    exc = api_error_from_response(403, b'{"error": {"code": "FORBIDDEN"}}', path)
    assert isinstance(exc, RobofyPermissionError)
    assert isinstance(exc, RobofyAuthError)  # old `except RobofyAuthError` handlers still match
    message = str(exc)
    assert path in message
    assert "not allowed to read this resource" in message
    assert "permission on that project/chatbot in Robofy" in message
    assert "ROBOFY_API_KEY" not in message  # the key is fine: do not send the user to it


def test_401_still_blames_the_key() -> None:
    exc = api_error_from_response(401, b"", "/v1/projects")
    assert type(exc) is RobofyAuthError
    assert not isinstance(exc, RobofyPermissionError)
    assert "ROBOFY_API_KEY" in str(exc)


def test_403_from_the_client_is_raised_once_as_a_permission_error(
    fake: FakeRobofy, client: RobofyClient
) -> None:
    path = "/v1/ai-agent/inbox/sessions/bot-7"
    fake.fail(path, 403, 1)
    with pytest.raises(RobofyPermissionError, match="bot-7"):
        list(client.paginate("sessions", chatbot_id="bot-7"))
    assert fake.calls(path) == 1


def test_transport_error_names_base_url(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.fail(PATH, "connect", 5)
    with pytest.raises(RobofyTransportError) as caught:
        list(client.paginate("chatbots", project_id=3))
    assert BASE_URL in str(caught.value)
    assert "ROBOFY_BASE_URL" in str(caught.value)
    assert caught.value.base_url == BASE_URL
    assert not isinstance(caught.value, RobofyTimeoutError)


# -- the key never leaks ------------------------------------------------------------------

KEY = "rk_LEAKCANARY_0123456789abcdef"


def _force(kind: str, fake: FakeRobofy, api: RobofyClient) -> None:
    if kind == "echo":
        # a server that echoes the credential back in its error body
        body = {"message": f"bad key {KEY}", "error": {"code": KEY, "detail": f"Bearer {KEY}"}}
        fake.add(PATH, body, status=401)
    elif kind in {"connect", "read_timeout", "remote_protocol", "invalid_json"}:
        fake.fail(PATH, kind, 5)
    elif kind == "no_envelope":
        fake.add(PATH, {"data": {"bots": []}})
    elif kind == "loop":
        fake.add(PATH, {"data": {"chatbots": [{"id": "b"}], "next_page_token": "t"}})
        fake.add(PATH, {"data": {"chatbots": [{"id": "b"}], "next_page_token": "t"}}, token="t")
    else:
        fake.fail(PATH, int(kind), 5, headers={"Retry-After": "1"})
    list(api.paginate("chatbots", project_id=3))


@pytest.mark.parametrize("auth_header", ["bearer", "api-key"])
@pytest.mark.parametrize(
    "kind",
    [
        "400",
        "401",
        "403",
        "404",
        "429",
        "500",
        "503",
        "connect",
        "read_timeout",
        "remote_protocol",
        "invalid_json",
        "no_envelope",
        "loop",
        "echo",
    ],
)
def test_key_never_appears_in_errors_or_logs(
    make_client: Callable[..., RobofyClient],
    fake: FakeRobofy,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    auth_header: str,
) -> None:
    api = make_client(api_key=KEY, auth_header=auth_header)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(RobofyError) as caught:
        _force(kind, fake, api)

    # the key did go out on the wire...
    sent = fake.requests[0].headers
    assert KEY in (sent.get("authorization", "") + sent.get("api-key", ""))
    # ...and nowhere else
    exc = caught.value
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert all(KEY not in str(arg) for arg in exc.args)
    assert all(KEY not in str(v) for v in vars(exc).values())
    assert KEY not in caplog.text
    assert caplog.records or kind in {"400", "401", "403", "404", "no_envelope", "loop", "echo"}


def test_key_is_not_in_config_or_client_repr(make_client: Callable[..., RobofyClient]) -> None:
    config = ClientConfig(base_url=BASE_URL, api_key=KEY)
    api = make_client(api_key=KEY)
    for text in (repr(config), str(config), repr(api), str(api)):
        assert KEY not in text
    assert "api_key" not in repr(config)


def test_bad_key_fails_fast_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="ROBOFY_API_KEY") as caught:
        ClientConfig(api_key=f"{KEY}\n")
    assert KEY not in str(caught.value)
    with pytest.raises(ValueError, match="ROBOFY_API_KEY is empty"):
        ClientConfig(api_key="")


def test_contract_error_after_invalid_json_retries(fake: FakeRobofy, client: RobofyClient) -> None:
    fake.fail(PATH, "invalid_json", 5)
    with pytest.raises(RobofyContractError, match="not valid JSON"):
        list(client.paginate("chatbots", project_id=3))


def test_transport_errors_do_not_chain_the_request(fake: FakeRobofy, client: RobofyClient) -> None:
    # The httpx exception carries the request (and its auth header): keep it off the chain.
    fake.fail(PATH, "read_timeout", 5)
    with pytest.raises(RobofyTimeoutError) as caught:
        list(client.paginate("chatbots", project_id=3))
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert "ReadTimeout" in str(caught.value)
