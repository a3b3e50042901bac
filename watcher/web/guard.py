"""Who may write through the page (upload, **Tentar de novo**), and from where.

- **Writing.** On a loopback ``HTTP_HOST`` anyone who can reach the page is on the machine and
  may write. Elsewhere writing needs ``UI_TOKEN``: the shop types it once (``/entrar``) and keeps
  it in a cookie (``HttpOnly``, ``SameSite=Strict``); scripts may send ``Authorization: Bearer``.
  Without ``UI_TOKEN`` the page is read-only there, and says so. A token, once set, is asked
  on loopback too.
- **Cross-site requests.** Every POST carries a page token (a hidden field: HMAC of a time and a
  random secret of this daemon, good for ``TOKEN_HOURS``), and an ``Origin`` header, when the
  browser sends one, must be this page's own.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

COOKIE = "thumbgen_ui"
TOKEN_HOURS = 12


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    def __init__(self, http_host: str, ui_token: str) -> None:
        self.ui_token = ui_token
        self.open_to_all = is_loopback(http_host) and not ui_token
        self.read_only = not is_loopback(http_host) and not ui_token
        self._secret = secrets.token_bytes(32)

    # -- who may write -----------------------------------------------------------------------

    def may_write(self, headers: Mapping[str, str]) -> bool:
        if self.open_to_all:
            return True
        if self.read_only:
            return False
        bearer = _bearer(headers.get("Authorization", ""))
        if bearer is not None:
            return self.right_code(bearer)
        kept = _cookie(headers.get("Cookie", ""))
        return kept is not None and hmac.compare_digest(kept, self._kept())

    def right_code(self, given: str) -> bool:
        return bool(self.ui_token) and hmac.compare_digest(given.encode(),
                                                           self.ui_token.encode())

    def cookie(self) -> str:
        """The Set-Cookie value that lets this browser write: a digest of the code, never the
        code itself, and only plain characters."""
        return (f"{COOKIE}={self._kept()}; Path=/; HttpOnly; SameSite=Strict; "
                f"Max-Age={30 * 24 * 3600}")

    def _kept(self) -> str:
        return hashlib.sha256(b"thumbgen-ui:" + self.ui_token.encode()).hexdigest()

    # -- cross-site requests -----------------------------------------------------------------

    def page_token(self) -> str:
        stamp = str(int(time.time()))
        return f"{stamp}.{self._mac(stamp)}"

    def token_ok(self, token: str) -> bool:
        stamp, _, mac = token.partition(".")
        if not stamp.isdigit() or not hmac.compare_digest(mac, self._mac(stamp)):
            return False
        return 0 <= time.time() - int(stamp) <= TOKEN_HOURS * 3600

    def same_origin(self, headers: Mapping[str, str]) -> bool:
        """No ``Origin`` (old browsers, forms without JavaScript in some) or this page's own."""
        origin = headers.get("Origin")
        if origin is None:
            return True
        host = headers.get("Host", "")
        return bool(host) and origin in (f"http://{host}", f"https://{host}")

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]


def _bearer(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cookie(value: str) -> str | None:
    try:
        jar = SimpleCookie(value)
    except CookieError:
        return None
    return jar[COOKIE].value if COOKIE in jar else None


__all__ = ["Guard", "is_loopback", "COOKIE"]
