"""The audit trail: one JSON line per delete, key change and admin action.

Written on the ``srstore.audit`` logger as a JSON object in the message itself, so the line
can be parsed whatever ``SRSTORE_LOG_FORMAT`` is. It names the key by its public id, never
the key.
"""

from __future__ import annotations

import json
import logging

from app.access import Principal
from config.logs import REQUEST_ID

log = logging.getLogger("srstore.audit")


def audit(action: str, principal: Principal, **details: object) -> None:
    line = {
        "audit": action,
        "key_id": principal.key_id,
        "tenant": principal.tenant,
        "request_id": REQUEST_ID.get(),
        **details,
    }
    log.info(json.dumps(line, sort_keys=True, default=str))
