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
(the name's own tag)          ``srstore:lease:<name>`` (compaction:         nothing: one key
                              ``compaction:{<id>}``, on the image's slot)
============================  ============================================  =================

Images spread over every slot (ids are random), so the cache and the delete marks scale
with the cluster; the ledger and the model pointer are one small key each. A new key follows
the same rule: give it the tag of whatever it must be updated with atomically, and never
scan the keyspace on a request path (a cluster would have to scan every master).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import RedisError

Client: TypeAlias = "aioredis.Redis | aioredis.RedisCluster"


def connect(url: str, cluster: bool = False, **options: Any) -> Client:
    """A client for ``url``: redis-py's cluster client when ``cluster``, which learns every
    node and slot from the one named and follows failovers; else a plain client."""
    if cluster:
        return aioredis.RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)


async def on_every_master(client: Client, *command: str) -> list[Any]:
    """``command``'s answer from each master (one server: its one answer): for what is true of
    the whole keyspace, such as the memory it holds, or whether every part of it answers."""
    if isinstance(client, aioredis.RedisCluster):
        replies = await client.execute_command(*command, target_nodes=client.PRIMARIES)
        return list(replies.values()) if isinstance(replies, dict) else [replies]
    return [await client.execute_command(*command)]


async def eval_and_wait(
    client: Client, script: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
) -> tuple[Any, int, int]:
    """Run ``script``, then ``WAIT`` until ``replicas`` replicas have it: the script's answer,
    how many replicas acknowledged it within ``timeout_ms``, and how many the master had
    connected (``ROLE``) when it ran.

    ``WAIT`` counts the writes of its own connection, so all three go down one connection: a
    pipeline on one server; on a cluster, the connection to the master of the keys' slot (the
    cluster client routes commands one by one, and a keyless ``WAIT`` it would send anywhere).
    """
    sent: list[tuple[Any, ...]] = [
        ("EVAL", script, len(keys), *keys, *args),
        ("ROLE",),
        ("WAIT", replicas, timeout_ms),
    ]
    if not isinstance(client, aioredis.RedisCluster):
        async with client.pipeline(transaction=False) as pipe:
            for command in sent:
                pipe.execute_command(*command)
            answer, role, reached = await pipe.execute()
        return answer, int(reached), len(role[2])
    await client.initialize()
    node = client.get_node_from_key(keys[0])
    if node is None:
        raise RedisError(f"no master serves the slot of {keys[0]}")
    commands = [PipelineCommand(n, *command) for n, command in enumerate(sent)]
    await node.execute_pipeline(commands)
    answers = [command.result for command in commands]
    for answer in answers:
        if isinstance(answer, Exception):
            await client.nodes_manager.initialize()  # the slot may have moved: look again
            raise answer if isinstance(answer, RedisError) else RedisError(str(answer))
    answer, role, reached = answers
    return answer, int(reached), len(role[2])  # type: ignore[arg-type,index]


async def relearn_slots(client: Client) -> None:
    """On a cluster, ask the nodes again which master serves each slot, now, and learn the
    keys of commands from one of those masters.

    The client's own refresh after a connection error is paced, and one that ran before a
    failover finished keeps naming the dead master. And the keys of some commands (XREADGROUP
    with BLOCK) are asked of one node (``COMMAND GETKEYS``) that the client picked when it
    started: in redis-py 8.2 a refresh of the slots alone does not move it, and a command
    that fails there never asks for a refresh. A worker whose streams all lived on the
    surviving masters retried that dead node for as long as it ran (CI, 2026-12-05)."""
    if isinstance(client, aioredis.RedisCluster):
        await client.initialize()  # the first time: nothing is known yet
        await client.nodes_manager.initialize()  # later: the slots as they are now
        client.commands_parser.node = client.nodes_manager.default_node


async def subscriber(client: Client, **options: Any) -> PubSub:
    """A pub/sub connection. A cluster client first learns the slots (it does so lazily, and
    its pub/sub picks the node that serves the channel's slot): a failover may have moved it
    since the last time, so each new subscription asks again."""
    await relearn_slots(client)
    return client.pubsub(**options)


def image_tag(image_id: str) -> str:
    """The hash tag of everything kept about one image."""
    return "{" + image_id + "}"


def rendition_prefix(image_id: str) -> str:
    """``hr:{id}:``: the prefix of an image's renditions, rendition index and delete mark."""
    return f"hr:{image_tag(image_id)}:"


LEDGER = "srstore:{ledger}"
# The cost ledger is one key that no script moves with another: it needs no tag, yet has one
# so that it is named like its neighbour.
COSTS = "srstore:{costs}"
# Image ids by when each was last read (tiering): one sorted set, on one master.
LAST_READ = "srstore:{last-read}"


def ledger_debited(image_id: str) -> str:
    """The mark that this image was debited (in the ledger's slot: one script sets both)."""
    return f"{LEDGER}:debited:{image_id}"


# API keys (issue 22): the records and the count of active ones, moved together by a revoke.
API_KEYS = "srstore:{keys}"
API_KEYS_ACTIVE = "srstore:{keys}:active"


def quota_counter(key_id: str, name: str) -> str:
    """One key's counter of one quota window (its own tag: keys spread over the masters)."""
    return f"srstore:quota:{{{key_id}}}:{name}"


MODEL_ACTIVE = "srstore:{model}:active"
MODEL_AUDIT = "srstore:{model}:audit"
MODEL_SWAPS = "srstore:{model}:swaps"


# Names before the hash tags (srstore up to issue 25) of the keys worth keeping: the render
# cache expires on its own and queue jobs live for a request's deadline.
LEGACY_NAMES = {
    "srstore:ledger": LEDGER,
    "srstore:costs": COSTS,
    "srstore:last-read": LAST_READ,
    "srstore:model:active": MODEL_ACTIVE,
    "srstore:model:audit": MODEL_AUDIT,
}


async def adopt_legacy_names(client: Client) -> list[str]:
    """Rename the ledger and the model pointer from their untagged names, once.

    ``RENAMENX`` keeps whatever the new name already holds, so running it again (every start
    of every process does) changes nothing. A cluster never had the old names (srstore did
    not run on one before), and a rename across slots would be refused there.
    """
    if isinstance(client, aioredis.RedisCluster):
        return []
    adopted = []
    for old, new in LEGACY_NAMES.items():
        if await client.exists(old) and await client.renamenx(old, new):
            adopted.append(old)
    return adopted


def queue_shard(stream: str, shard: int) -> str:
    """One stream of the render queue: ``{srstore:render:0}`` (its own tag, so the shards
    spread over the masters)."""
    return "{" + f"{stream}:{shard}" + "}"


__all__ = [
    "API_KEYS",
    "API_KEYS_ACTIVE",
    "COSTS",
    "LAST_READ",
    "LEDGER",
    "LEGACY_NAMES",
    "MODEL_ACTIVE",
    "MODEL_AUDIT",
    "MODEL_SWAPS",
    "Client",
    "adopt_legacy_names",
    "connect",
    "eval_and_wait",
    "image_tag",
    "ledger_debited",
    "on_every_master",
    "queue_shard",
    "quota_counter",
    "rendition_prefix",
    "subscriber",
]


def lease_key(name: str) -> str:
    """A lease on background work (see :mod:`cache.leases`); one key, moved with nothing."""
    return f"srstore:lease:{name}"
