"""The masking rules: every form of secret in a URL is masked; what only looks like one is not."""

from __future__ import annotations

import pytest

from watcher.masking import (MASK, is_secret_name, mask_secret, mask_text, mask_url,
                             url_secrets)

# (URL as configured, as shown): every form gradio_client accepts with a secret in it
MASKED = [
    ("http://user:Pw9secret@h.example:7860/", "http://****@h.example:7860/"),
    ("https://:hf_TOKEN1234@h.example/", "https://****@h.example/"),  # empty user
    ("https://TOKEN1234@h.example/app/", "https://****@h.example/app/"),  # the user is the token
    ("http://user:p@ss@h.example/", "http://****@h.example/"),  # '@' in the password
    ("http://user:pa/ss@h.example/x", "http://****@h.example/x"),  # '/' left unencoded
    ("http://user:p%40ss@h.example/", "http://****@h.example/"),
    ("http://h.example/?token=T0k", "http://h.example/?token=****"),
    ("http://h.example/?key=K3y", "http://h.example/?key=****"),
    ("http://h.example/?api_key=K3y", "http://h.example/?api_key=****"),
    ("http://h.example/?access_token=T0k", "http://h.example/?access_token=****"),
    ("https://acct.blob.example/c/b?sv=2024-05-04&sp=r&sig=S1g%3D",
     "https://acct.blob.example/c/b?sv=2024-05-04&sp=r&sig=****"),
    ("https://s3.example/o?X-Amz-Date=20260101&X-Amz-Signature=abc",
     "https://s3.example/o?X-Amz-Date=20260101&X-Amz-Signature=****"),
    ("http://h.example/?lang=pt&password=x&secret=y&apiKey=z&auth=w",
     "http://h.example/?lang=pt&password=****&secret=****&apiKey=****&auth=****"),
    ("http://h.example/app#access_token=T0k&state=1",
     "http://h.example/app#access_token=****&state=1"),
    ("http://h.example/?api%5Fkey=K3y", "http://h.example/?api%5Fkey=****"),
    ("http://u:pw@h.example:80/p/?token=T0k&page=2",
     "http://****@h.example:80/p/?token=****&page=2"),
]

# text that only looks like a secret: shown as it is
UNCHANGED = [
    "not-lain/background-removal",  # a Space id
    "https://h.example/@shop",  # an '@' in the path
    "http://h.example:8080/@shop/x",
    "http://[::1]:7860/x@y",
    "http://h.example/?keyword=shoes&size=1200&page=2&design=a&author=b&monkey=c&bypass=d",
    "http://h.example/?session_hash=abc123&fn_index=2",
    "http://h.example/?token",  # a name without a value
    "https://h.example/gradio_api/file=/tmp/gradio/x.png",
    "http://HOST:PORT/path",
]


@pytest.mark.parametrize(("url", "shown"), MASKED)
def test_every_form_of_secret_in_a_url_is_masked(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert mask_text(f"cannot reach {url}: refused") == f"cannot reach {shown}: refused"


@pytest.mark.parametrize("text", UNCHANGED)
def test_what_only_looks_like_a_secret_is_left_readable(text: str) -> None:
    assert mask_url(text) == text
    assert mask_text(text) == text


def test_a_url_in_a_sentence_keeps_the_punctuation_around_it() -> None:
    text = ("remote (http://u:pw@h/png?token=abc) is back. Was: cannot reach "
            "http://h/?sig=zz: refused, see 'http://:tk@h/'.")
    assert mask_text(text) == ("remote (http://****@h/png?token=****) is back. Was: cannot "
                               "reach http://h/?sig=****: refused, see 'http://****@h/'.")


def test_known_values_are_masked_wherever_they_stand() -> None:
    # a library may print the password alone, or decoded
    secrets = url_secrets("http://user:p%40ss-w0rd@h/?token=T0ken42&lang=pt")
    assert set(secrets) >= {"p%40ss-w0rd", "p@ss-w0rd", "T0ken42"}
    assert "user" not in secrets and "pt" not in secrets
    text = "login of user with p@ss-w0rd failed; T0ken42 expired"
    assert mask_text(text, secrets) == f"login of user with {MASK} failed; {MASK} expired"


def test_the_user_is_a_secret_only_when_it_stands_alone() -> None:
    assert url_secrets("https://TOKEN1234@h/") == ["TOKEN1234"]
    assert url_secrets("https://:TOKEN1234@h/") == [":TOKEN1234", "TOKEN1234"]
    assert url_secrets("not-lain/background-removal") == []
    assert url_secrets("http://h/?size=2") == []


def test_short_known_values_are_not_replaced_in_free_text() -> None:
    assert mask_text("a page of abc", ["abc", ""]) == "a page of abc"


def test_pairs_bearer_and_hugging_face_tokens_in_prose() -> None:
    text = "rejected token=abc123, api_key=k; Authorization: Bearer abcdefghij hf_" + "x" * 20
    assert mask_text(text) == (f"rejected token={MASK}, api_key={MASK}; Authorization: "
                               f"Bearer {MASK} {MASK}")
    plain = "token verification passed; password reset page; bearer of news; size=3 kind=damaged"
    assert mask_text(plain) == plain


def test_masking_twice_changes_nothing_more() -> None:
    for url, shown in MASKED:
        assert mask_text(shown) == shown


def test_secret_names() -> None:
    for name in ("token", "TOKEN", "access_token", "apiKey", "api-key", "X-Amz-Signature",
                 "sig", "client_secret", "pass", "Authorization"):
        assert is_secret_name(name), name
    for name in ("keyword", "size", "design", "session_hash", "passenger", "author", "monkey"):
        assert not is_secret_name(name), name


def test_a_secret_setting_keeps_only_its_ends_when_long() -> None:
    assert mask_secret("") == ""
    assert mask_secret("short") == MASK
    assert mask_secret("hf_abcdefghijkl45") == f"hf{MASK}45"
