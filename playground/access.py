"""Who may do what on a shared playground: who the user is, where the request comes from, who is an
admin, and whether a public share link may start at all.

Who the user is (``owner_id``): the login name with ``--auth``; without logins, an anonymous id made
from a random key the browser keeps (``gr.BrowserState``, in localStorage), so the same browser is the
same user after a reload or a restart; the per-tab session id when no key came with the request (a
script, or a page that has not sent its key yet). The key is a bearer secret: only a hash of it is
ever stored or shown, so nobody who sees the stored ids (an admin, an export) can act as that browser.

Admins (``is_admin``), allowed to export everybody's data, add to the shared knowledge base and, in
the Training tab, train / deploy / roll back:
- with logins (``--auth`` / ``--auth-file``): only the names given with ``--admin`` / ``--admins-file``;
- without logins: whoever browses from this machine (127.0.0.1), unless the server is shared
  (``--share``): the tunnel also arrives from 127.0.0.1, so then nobody is an admin in the browser.
The command line (``launch.py deploy``, ``export``, ...) is always the operator's.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from playground.ratelimit import RateLimiter
from settings import Settings

log = logging.getLogger(__name__)
LOGIN_FAILURES = "10/minute"  # failed logins per user name before even the right password is refused

SHARE_WITHOUT_AUTH = (
    "--share puts this playground on the public internet: anyone with the link could chat with the "
    "model, read what the model says, and feed the training loop whatever they type. Add a login with "
    "--auth USER:PASS (or --auth-file FILE), or pass --public to share it without one on purpose."
)


def user_id_for(request: Any) -> str:
    """The authenticated user name, or an anonymous id for this browser session."""
    if request is None:
        return "anonymous"
    if getattr(request, "username", None):
        return str(request.username)
    session_hash = getattr(request, "session_hash", None) or "unknown"
    return f"anon-{session_hash[:12]}"


BROWSER_KEY = re.compile(r"^[0-9a-f]{32}$")


def new_browser_key() -> str:
    """A fresh random browser key (128 bits)."""
    return secrets.token_hex(16)


def valid_browser_key(value: Any) -> str | None:
    """``value`` if it has the form of a browser key, else None (anything else is ignored)."""
    return value if isinstance(value, str) and BROWSER_KEY.match(value) else None


def owner_id(request: Any, browser_key: Any = None) -> str:
    """Whose data a request reads and writes: the login name, else ``anon-`` and a hash of this
    browser's key, else the per-session anonymous id of ``user_id_for``."""
    if request is not None and getattr(request, "username", None):
        return str(request.username)
    key = valid_browser_key(browser_key)
    if key is not None:
        return "anon-" + hashlib.sha256(key.encode()).hexdigest()[:24]
    return user_id_for(request)


def client_address(request: Any) -> str | None:
    """The client's address as uvicorn resolved it (see playground.ratelimit on X-Forwarded-For)."""
    client = getattr(request, "client", None) if request is not None else None
    host = getattr(client, "host", None)
    return str(host) if host else None


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class LoginCheck:
    """Gradio's login check (``launch(auth=LoginCheck(pairs))``): constant-time password comparison,
    and at most ``LOGIN_FAILURES`` failed attempts per user name, so a public link cannot be used to
    guess passwords at speed. Passwords are never logged; failures are, with the user name only."""

    def __init__(self, pairs: Sequence[tuple[str, str]], failures: str = LOGIN_FAILURES):
        self._passwords = {user: password.encode() for user, password in pairs}
        self._failures = RateLimiter({"login": (failures, None)})

    def __call__(self, username: str, password: str) -> bool:
        expected = self._passwords.get(username)
        if expected is not None and not self._failures.blocked("login", username):
            if hmac.compare_digest(password.encode(), expected):
                return True
        elif expected is not None:
            log.warning("login refused for %r: too many failed attempts, try again later", username)
            return False
        self._failures.check("login", username, None)
        log.info("failed login for %r", username if expected is not None else "(unknown user)")
        return False


def share_refusal(settings: Settings, logins: int) -> str | None:
    """Why the server must not start (a public link without a login and without --public), or None."""
    if settings.server.share and not logins and not settings.safety.public:
        return SHARE_WITHOUT_AUTH
    return None


@dataclass(frozen=True)
class AccessPolicy:
    logins: frozenset[str] = frozenset()  # user names that can log in (no passwords kept here)
    admins: frozenset[str] = frozenset()
    share: bool = False
    limit_local: bool = False
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        """Raises ValueError for an unreadable auth or admins file."""
        logins = frozenset(user for user, _ in settings.safety.auth_pairs())
        admins = frozenset(settings.safety.admin_names())
        notes = []
        if logins and not admins:
            notes.append("no --admin given: exports and other admin actions are refused in the browser")
        unknown = sorted(admins - logins) if logins else []
        if unknown:
            notes.append(f"--admin names without a login: {', '.join(unknown)}")
        return cls(logins, admins, settings.server.share, settings.safety.rate_limit_local, tuple(notes))

    @property
    def auth(self) -> bool:
        return bool(self.logins)

    def is_local(self, request: Any) -> bool:
        """A request from this machine, not through the share tunnel (None: an in-process call)."""
        if request is None:
            return True
        return not self.share and is_loopback(client_address(request))

    def is_admin(self, request: Any) -> bool:
        if request is None:  # called from code (a script, a test), not by a browser or an HTTP client
            return True
        if self.auth:
            username = getattr(request, "username", None) if request is not None else None
            return bool(username) and username in self.admins
        return self.is_local(request)

    def rate_limited(self, request: Any) -> bool:
        """Whether rate limits apply to this request (not to the operator's own local browser)."""
        return self.limit_local or not self.is_local(request)

    def admin_refusal(self, request: Any, action: str) -> str | None:
        """None when the request may do ``action``, else the message that says why not."""
        if self.is_admin(request):
            return None
        if self.auth:
            return f"{action} needs an admin login (the operator names admins with --admin USER)."
        return f"{action} is only possible from the machine the playground runs on (or with an admin login)."
