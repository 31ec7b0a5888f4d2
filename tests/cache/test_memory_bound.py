"""The in-process cache keeps within its bound, the least recently used going first."""

from __future__ import annotations

from service.cache.backend import MemoryBackend


async def test_the_least_recently_used_entries_go_when_the_bound_is_reached() -> None:
    store = MemoryBackend(max_bytes=1_000)
    for n in range(10):
        await store.set(f"k{n}", b"x" * 98, 60)  # 100 bytes a key with its value
    assert await store.get("k0") == b"x" * 98  # k0 is now the most recently used

    await store.set("k10", b"y" * 97, 60)

    # One entry had to go: k1, the least recently used, not k0.
    assert await store.get("k1") is None
    assert await store.get("k0") is not None
    assert all([await store.get(f"k{n}") is not None for n in range(2, 11)])


async def test_a_distinct_value_per_request_never_grows_it_past_the_bound() -> None:
    store = MemoryBackend(max_bytes=50_000)
    for n in range(10_000):
        await store.set(f"result:{n}", b"r" * 500, 86_400)

    kept = [n for n in range(10_000) if await store.get(f"result:{n}") is not None]

    assert len(kept) == 50_000 // (len("result:9999") + 500)
    assert kept == list(range(10_000 - len(kept), 10_000))


async def test_replacing_and_clearing_keep_the_count_right() -> None:
    store = MemoryBackend(max_bytes=300)
    await store.set("a", b"1" * 99, 60)
    await store.set("a", b"2" * 99, 60)  # replaced, not counted twice
    await store.set("b", b"3" * 99, 60)
    assert await store.clear(key="a") == 1
    await store.set("c", b"4" * 99, 60)
    await store.set("d", b"5" * 99, 60)

    assert [await store.get(k) for k in "bcd"] == [b"3" * 99, b"4" * 99, b"5" * 99]
    assert not await store.add("b", b"6", 60)  # b looked at: now the most recently used
    assert await store.add("e", b"7" * 99, 60)
    assert await store.get("c") is None  # the least recently used, gone for e
    assert [await store.get(k) for k in "bde"] == [b"3" * 99, b"5" * 99, b"7" * 99]
