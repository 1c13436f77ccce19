"""Writing a deployment file: the inverse of :func:`framepipe.config.loading.load_config`.

tomli-w writes it (a well-kept writer, the counterpart of the standard library's
``tomllib``), so quoting, escapes and arrays of tables are its problem, not ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w


def dump_toml(sections: Mapping[str, Any]) -> str:
    """A deployment file's text (what ``load_config`` reads) from ``{section: {key: value}}``,
    ``{name: [{...}, ...]}`` for arrays of tables (``[[recorders]]``) and top-level keys."""
    return tomli_w.dumps(dict(sections))
