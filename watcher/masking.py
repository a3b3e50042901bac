"""Secrets never leave the process: the masking rules every output goes through.

- ``mask_url(url)``: a URL with its userinfo (``user:pass@``, ``:TOKEN@``, ``TOKEN@``, a password
  holding ``@``) and the values of query or fragment parameters named like a secret
  (``token``, ``key``, ``api_key``, ``access_token``, ``sig``, ``X-Amz-Signature``…) replaced by
  ``MASK``; scheme, host, port, path and every other parameter stay readable.
- ``mask_secret(value)``: the printable form of a secret setting (``GRADIO_TOKEN``).
- ``mask_text(text, secrets)``: free text (a log message, an exception, a note, a finding): every
  URL in it masked as above, ``name=value`` pairs and bearer or Hugging Face tokens masked, and
  every known secret value replaced wherever it stands.
- ``url_secrets(url)``: the secret parts of a configured URL, raw and decoded, for
  ``mask_text`` to find them also where a library printed them outside a URL.

What leaves the process goes through these: notes in ``_falhas/``, the console, ``app.log`` and
journald, ``/health``, ``thumbgen config`` and ``diagnose``, backup manifests, and the texts of
the remote's errors. A secret they cannot recognise (no URL around it, no secret-like name, not a
configured value) is not masked; so a secret goes in ``GRADIO_TOKEN`` or in a URL, never
elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "****"
# Known values shorter than this are not replaced in free text: "abc" would mask ordinary words.
MIN_SECRET_LENGTH = 4

# A parameter is secret when one of the words of its name is one of these: words split at
# ``_ - .`` and at camelCase, so ``apiKey`` and ``X-Amz-Signature`` are, ``keyword`` is not.
_SECRET_WORDS = frozenset({
    "token", "key", "apikey", "secret", "password", "passwd", "pwd", "pass", "sig",
    "signature", "auth", "authorization", "credential", "credentials", "jwt"})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URL inside free text ends at whitespace, a quote or an angle bracket, and not on the
# punctuation of the sentence around it ("cannot reach http://h/: refused", "(http://h/)").
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*[^\s'\"<>`.,:;!?)\]}]")
# ``name=value`` outside a URL (``token=…`` in an exception message); the name is judged below.
_PAIR = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*)=([^\s&,;'\"]*[^\s&,;'\".:!?)\]}])")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{16,}\b")


def is_secret_name(name: str) -> bool:
    """``access_token``, ``apiKey``, ``X-Amz-Signature``: yes. ``size``, ``keyword``: no."""
    name = unquote(name)
    return any(word.lower() in _SECRET_WORDS for word in _WORDS.findall(name))


def mask_url(url: str) -> str:
    """``url`` with its userinfo and secret parameters masked; text that is no URL (a Space id
    such as ``owner/name``) comes back unchanged."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    head, rest = url[:scheme.end()], url[scheme.end():]
    end = _userinfo_end(rest)
    if end >= 0:
        rest = MASK + rest[end:]
    return head + _mask_parameters(rest)


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of ``rest`` (a URL after ``scheme://``) ends: the index of its ``@``,
    or -1 when there is none.

    The authority runs to the first ``/``, ``?`` or ``#``, and its userinfo to the last ``@``
    in it, so a password may hold ``@``. A password holding ``/``, ``?`` or ``#`` unencoded
    ends the authority early (``user:pa/ss@host``); it shows as a port that is no number, and
    then the userinfo runs to the last ``@`` of the URL. ``host:8080/@shop`` is a path.
    """
    authority_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        return at
    authority = rest[:authority_end]
    _, colon, port = authority.rpartition(":")
    if colon and not authority.startswith("[") and not port.isdigit():
        return rest.rfind("@")
    return -1


def _mask_parameters(rest: str) -> str:
    """Mask the values of secret-named parameters in the query and in the fragment."""
    cut = min((i for i in map(rest.find, "?#") if i >= 0), default=-1)
    if cut < 0:
        return rest
    out, pieces = [rest[:cut]], re.split(r"([?#&;])", rest[cut:])
    for piece in pieces:
        name, equals, _ = piece.partition("=")
        out.append(f"{name}={MASK}" if equals and is_secret_name(name) else piece)
    return "".join(out)


def mask_secret(value: object) -> str:
    """A secret setting as printed: empty stays empty (so "not set" shows), a short one is only
    ``MASK``, a long one keeps two characters at each end to tell tokens apart."""
    text = str(value)
    if not text:
        return ""
    return MASK if len(text) <= 8 else f"{text[:2]}{MASK}{text[-2:]}"


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``, raw and percent-decoded: the userinfo, its password (or its
    user when it has no password: ``TOKEN@host``), and the values of secret parameters."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return []
    rest = url[scheme.end():]
    found: list[str] = []
    end = _userinfo_end(rest)
    if end >= 0:
        userinfo = rest[:end]
        user, colon, password = userinfo.partition(":")
        found += [userinfo, password if colon else user]
    for name, _, value in (p.partition("=") for p in re.split(r"[?#&;]", rest)[1:]):
        if value and is_secret_name(name):
            found.append(value)
    return list(dict.fromkeys(form for value in found if value
                              for form in (value, unquote(value))))


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL masked by ``mask_url``, secret-named ``name=value`` pairs,
    bearer and Hugging Face tokens masked, and each of ``secrets`` (known values, at least
    ``MIN_SECRET_LENGTH`` long) replaced wherever it stands."""
    # Longest first, so that a secret holding another is masked whole.
    for value in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len,
                        reverse=True):
        text = text.replace(value, MASK)
    text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group()), text)
    text = _PAIR.sub(lambda m: f"{m[1]}={MASK}" if is_secret_name(m[1]) else m[0], text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    return _HF_TOKEN.sub(MASK, text)


__all__ = ["MASK", "mask_url", "mask_secret", "mask_text", "url_secrets", "is_secret_name"]
