"""Who may use the web server: loopback by default, a token beyond it.

The rule (``[web]`` in the config, docs/operators.md):

- served on loopback without ``web.token_file``: everyone who can reach the port is on
  this machine; everything is allowed (as ``framepipe acquire`` is, from loopback);
- served beyond loopback: a token is required, or the server refuses to start;
- with a token: every state change (start, stop) needs it, as ``Authorization: Bearer``
  (a header a page of another site cannot make a browser send); beyond loopback reads need
  it too, as the header or the ``framepipe_token`` cookie the page sets (images cannot send
  headers), unless ``web.open_reads``.
"""

from __future__ import annotations

import dataclasses
import hmac
from pathlib import Path

from framepipe.config import Config
from framepipe.core.errors import ConfigError
from framepipe.wire.security import is_exposed

#: the cookie the page keeps the token in, for the requests a browser makes by itself (images)
COOKIE = "framepipe_token"
#: shorter tokens are guessable
MIN_TOKEN_CHARS = 16


@dataclasses.dataclass(frozen=True)
class Access:
    """The decided policy: the token (None: none needed) and whether reads are open."""

    token: str | None
    open_reads: bool
    exposed: bool

    @classmethod
    def from_config(cls, config: Config) -> Access:
        """The policy of ``config``; a :class:`ConfigError` (exit 2, nothing started) when it is unsafe."""
        view, web = config.viewer, config.web
        exposed = is_exposed(f"tcp://{view.host}:{view.port}")
        token = read_token(web.token_file) if web.token_file else None
        if exposed and token is None:
            raise ConfigError(
                f"viewer.host = {view.host!r} is beyond loopback: set web.token_file (a file with a token,"
                " e.g. `openssl rand -hex 32 > web.token`) or serve on 127.0.0.1",
                key="web.token_file",
            )
        # on loopback the readers are on this machine: the token guards the changes only
        return cls(token=token, open_reads=web.open_reads or not exposed, exposed=exposed)

    @property
    def required(self) -> str:
        """What needs the token: ``nothing``, ``changes`` or ``everything`` (the page asks)."""
        if self.token is None:
            return "nothing"
        return "changes" if self.open_reads else "everything"

    def allows(self, *, change: bool, bearer: str | None, cookie: str | None) -> bool:
        """May a request with these credentials read (``change`` False) or change state?"""
        if self.token is None:
            return True
        if change:
            return bearer is not None and hmac.compare_digest(bearer.encode(), self.token.encode())
        if self.open_reads:
            return True
        return any(c is not None and hmac.compare_digest(c.encode(), self.token.encode()) for c in (bearer, cookie))


def read_token(path: str) -> str:
    """The token in ``path`` (its first line); a :class:`ConfigError` naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"cannot read the token file {path}: {reason}", key="web.token_file") from e
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the token in {path} is too short ({len(token)} characters, at least {MIN_TOKEN_CHARS})",
            key="web.token_file",
        )
    return token
