"""OAuth 2.0 pieces that are pure: PKCE, state and code checks, token answers, the redirect URI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from connectors import oauth
from connectors.errors import NeedsAttentionError
from connectors.quickbooks.settings import OAUTH
from engine.integrations import IntegrationSettings

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_the_s256_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

    assert oauth.s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_a_verifier_is_43_to_128_unreserved_characters_and_never_repeats() -> None:
    verifiers = {oauth.new_verifier() for _ in range(50)}

    assert len(verifiers) == 50
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)


@pytest.mark.parametrize(
    ("state", "ok"),
    [
        # A fresh state, drawn once at import; the id names it so every test worker collects the same test.
        pytest.param(oauth.new_state(), True, id="fresh-state"),
        ("", False),
        ("short", False),
        ("a" * 201, False),
        ("abc\x00defghijklmnopqrstuvwxyz", False),
        ("abcdefghijklmnopqrstuvwxyz' OR 1=1 --", False),
        ("ábcdefghijklmnopqrstuvwxyz0123", False),
        ("abcdefghijklmnopqrstuvwxyz\n0123", False),
    ],
)
def test_only_states_shaped_like_ours_are_looked_up(state: str, ok: bool) -> None:
    assert oauth.well_formed_state(state) is ok


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        ("AB11765432109876543210abcdef", True),
        ("", False),
        ("x" * 2049, False),
        ("code with space", False),
        ("code\r\nSet-Cookie: x=1", False),
        ("cöde", False),
    ],
)
def test_codes_are_printable_ascii_of_bounded_length(code: str, ok: bool) -> None:
    assert oauth.well_formed_code(code) is ok


def test_the_state_is_stored_only_as_its_hash() -> None:
    state = oauth.new_state()

    assert oauth.state_hash(state) != state
    assert len(oauth.state_hash(state)) == 64


def test_the_redirect_uri_is_configuration_not_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERFLOW_OAUTH_REDIRECT_BASE", "https://books.example.com/")

    assert (
        oauth.redirect_uri("quickbooks")
        == "https://books.example.com/v1/integrations/quickbooks/oauth/callback"
    )


def test_the_authorisation_url_carries_state_challenge_scope_and_the_configured_redirect() -> None:
    settings = IntegrationSettings(
        uuid4(), "quickbooks", True, "production", "https://quickbooks.api.intuit.com", {"client_id": "ABC"}
    )

    url = OAUTH.authorization_url(
        settings, state="S" * 43, challenge="C" * 43, redirect="https://x.example/cb"
    )

    assert url.startswith("https://appcenter.intuit.com/connect/oauth2?")
    for part in (
        "client_id=ABC",
        "response_type=code",
        "scope=com.intuit.quickbooks.accounting",
        "redirect_uri=https%3A%2F%2Fx.example%2Fcb",
        "state=" + "S" * 43,
        "code_challenge=" + "C" * 43,
        "code_challenge_method=S256",
    ):
        assert part in url


def test_a_sandbox_base_url_serves_its_own_oauth_endpoints() -> None:
    settings = IntegrationSettings(uuid4(), "quickbooks", True, "sandbox", "http://127.0.0.1:9140/", {})

    assert OAUTH.token_url(settings) == "http://127.0.0.1:9140/oauth2/v1/tokens/bearer"
    assert OAUTH.authorize_url(settings) == "http://127.0.0.1:9140/connect/oauth2"


def test_a_token_answer_gives_both_expiries() -> None:
    answer = {
        "access_token": "a",
        "refresh_token": "r",
        "expires_in": 3600,
        "x_refresh_token_expires_in": 8_726_400,
        "token_type": "bearer",
    }

    tokens = oauth.token_set(answer, NOW)

    assert tokens.access_expires_at == NOW + timedelta(hours=1)
    assert tokens.refresh_expires_at == NOW + timedelta(days=101)
    assert "a" not in repr(tokens).replace("access_expires_at", "")


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"access_token": "a"},
        {"access_token": "", "refresh_token": "r"},
        {"access_token": "a", "refresh_token": "r", "expires_in": -5},
        {"access_token": "a", "refresh_token": "r", "expires_in": 10**30},
        {"access_token": "a", "refresh_token": "r", "expires_in": "soon"},
    ],
)
def test_an_unusable_token_answer_needs_attention(answer: dict[str, object]) -> None:
    with pytest.raises(NeedsAttentionError) as caught:
        oauth.token_set(answer, NOW)
    assert caught.value.code == "invalid_token_response"


def test_the_refresh_is_due_ten_minutes_before_the_access_token_ends() -> None:
    assert oauth.refresh_due_at(NOW) == NOW - timedelta(minutes=10)
