"""Loaded (via PYTHONPATH) by the Ray processes the tests start inside the loopback-only namespace.

Ray imports jsonschema, and jsonschema imports rfc3987_syntax when it is installed ([qlib] pulls it
in through jupyter); that module builds a Lark grammar at import: ~4 s of CPU in every Ray process.
Ray 2.60's raylet gives its dashboard agent 15 s to start, so on a busy 2-core machine the node
fails to start. Ray never validates the URI formats that module serves, so the tests skip it."""

import sys

sys.modules.setdefault("rfc3987_syntax", None)
