"""Where srstore's keys live in Redis, and the client that reaches them: one server or a cluster.

Redis Cluster runs a multi-key command, transaction or script only when all its keys hash to
one slot, and a key's slot is the CRC16 of its hash tag: the text between its first ``{`` and
the next ``}``. So every key is named after the unit its multi-key operations are about, and
that unit is its tag:

============================  ============================================  =================
tag                           keys                                          moved together by
============================  ============================================  =================
``{<image id>}``              ``hr:{id}:<rendition>``, ``hr:{id}:keys``,    a put that checks
                              ``hr:{id}:deleted``                           the delete mark;
                                                                            DELETE's drop
``{ledger}``                  ``srstore:{ledger}``,                         one debit per
                              ``srstore:{ledger}:debited:<id>``             deleted image
``{model}``                   ``srstore:{model}:active``, ``:audit``,       a model swap
                              ``:swaps`` (the channel)
``{<stream>:<n>}``            a render-queue shard and the in-flight        enqueue, finish
                              marks of its jobs
============================  ============================================  =================

Images spread over every slot (ids are random), so the cache and the delete marks scale
with the cluster; the ledger and the model pointer are one small key each. A new key follows
the same rule: give it the tag of whatever it must be updated with atomically, and never
scan the keyspace on a request path (a cluster would have to scan every master).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis import asyncio as aioredis

Client: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"


def connect(url: str, cluster: bool = False, **options: Any) -> Client:
    """A client for ``url``: redis-py's cluster client when ``cluster``, which learns every
    node and slot from the one named and follows failovers; else a plain client."""
    if cluster:
        return aioredis.RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


def image_tag(image_id: str) -> str:
    """The hash tag of everything kept about one image."""
    return "{" + image_id + "}"


def rendition_prefix(image_id: str) -> str:
    """``hr:{id}:``: the prefix of an image's renditions, rendition index and delete mark."""
    return f"hr:{image_tag(image_id)}:"


LEDGER = "srstore:{ledger}"


def ledger_debited(image_id: str) -> str:
    """The mark that this image was debited (in the ledger's slot: one script sets both)."""
    return f"{LEDGER}:debited:{image_id}"


MODEL_ACTIVE = "srstore:{model}:active"
MODEL_AUDIT = "srstore:{model}:audit"
MODEL_SWAPS = "srstore:{model}:swaps"


def queue_shard(stream: str, shard: int) -> str:
    """One stream of the render queue: ``{srstore:render:0}`` (its own tag, so the shards
    spread over the masters)."""
    return "{" + f"{stream}:{shard}" + "}"


__all__ = [
    "LEDGER",
    "MODEL_ACTIVE",
    "MODEL_AUDIT",
    "MODEL_SWAPS",
    "Client",
    "connect",
    "image_tag",
    "ledger_debited",
    "queue_shard",
    "rendition_prefix",
]
