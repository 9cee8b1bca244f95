"""``srstore ledger reconcile`` makes the ledger what the object store holds."""

from __future__ import annotations

from ledger import make_ledger
from render.recount import reconcile
from storage import make_store
from tests.conftest import encode, serving


async def test_a_ledger_that_drifted_is_recounted_from_the_store(
    embedded_settings,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    async with serving(embedded_settings) as (_, client):
        uploads = [
            (
                await client.post(
                    "/v1/images",
                    content=encode(photo.resize(size), "PNG"),
                    headers={"content-type": "image/png"},
                )
            ).json()
            for size in ((64, 48), (120, 80), (40, 40))
        ]
        await client.delete(f"/v1/images/{uploads[2]['id']}")
    ledger, store = make_ledger(embedded_settings), make_store(embedded_settings)
    await ledger.add(999, 99, 7, representation="x4")  # updates a failover lost, the other way
    drifted = await ledger.totals()

    dry = await reconcile(store, ledger, apply=False)
    done = await reconcile(store, ledger)

    kept = uploads[:2]
    assert drifted.images == 2 + 7
    assert dry.after == drifted
    assert (done.after.images, done.after.original_bytes, done.after.stored_bytes) == (
        2,
        sum(u["original_bytes"] for u in kept),
        sum(u["stored_bytes"] for u in kept),
    )
    assert done.after.by_representation["x4"].images == 2
