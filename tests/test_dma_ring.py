"""The descriptor ring against dmaengine's contract, stated by hand.

What a client of a memcpy channel may rely on (drivers/dma/dmaengine.c,
include/linux/dmaengine.h, drivers/dma/virt-dma.c): a channel completes its
descriptors in submission order (``vchan_cookie_complete()`` on the issued
list), each once, calling the client's callback with a ``dmaengine_result``
(``result``, ``residue``: the bytes not transferred); a descriptor that
never completes holds its channel until ``dmaengine_terminate_sync()``;
channels run independently, so completions across channels need not follow
submission order.  A driver that passes no result (PTDMA's
``pt_handle_active_desc()`` -> ``dmaengine_desc_get_callback_invoke(tx, NULL)``)
reports DMA_TRANS_NOERROR and residue 0 whatever happened.  migd's fault
points define what went wrong: ``fail_dma_desc`` moves nothing (-EIO),
``fail_dma_partial`` half the bytes, ``fail_dma_timeout`` never completes.

Random submissions to random channels with random faults are checked
against those statements, from what the client sees (cookies, results,
residues, the destination's bytes) - not against a second implementation.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migd.dma import DescRing, DmaDevice
from migd.faults import FaultInjector
from migd.hw import Clock, VirtualClock, get_profile
from migd.mm import PAGE_SIZE, NodeSpec, PhysMemory
from migd.mm._copy import copy_folio_prefixes, copy_folios

# -- scenarios ---------------------------------------------------------------------------

_FAULTS = ("fail_dma_desc", "fail_dma_partial", "fail_dma_timeout")


@st.composite
def scenarios(draw, orders: tuple[int, ...], max_descs: int):
    nr_chan = draw(st.integers(1, 4))
    subs = draw(st.lists(st.tuples(st.integers(0, nr_chan - 1),
                                   st.lists(st.sampled_from(orders), min_size=1,
                                            max_size=max_descs),
                                   st.sampled_from([0.0, 0.0, 1e-6, 5e-5])),
                         min_size=1, max_size=5))
    faults = {name: (draw(st.sampled_from([0, 0, 10, 50, 100])),
                     draw(st.sampled_from([1, 1, 3])), draw(st.sampled_from([-1, 1, 2])))
              for name in _FAULTS}
    return subs, faults, draw(st.integers(0, 2**16))


def _memory(subs, words_per_page: int) -> tuple[PhysMemory, list]:
    """Two nodes; each descriptor gets its own source and destination folio."""
    orders = [np.array(o, dtype=np.int8) for _, o, _ in subs]
    pages = int(sum((1 << o.astype(np.int64)).sum() for o in orders))
    mib = 2 * max(1, -(-pages * PAGE_SIZE // (2 << 20)))
    mem = PhysMemory([NodeSpec(mib << 20), NodeSpec(mib << 20)], words_per_page=words_per_page)
    mem.arena.reshape(-1)[:] = np.random.default_rng(1).integers(
        1, 2**63, mem.arena.size, dtype=np.int64).view(np.uint64)
    placed, pfn = [], 0
    for o in orders:
        size = 1 << o.astype(np.int64)
        src = pfn + np.concatenate([[0], np.cumsum(size)[:-1]])
        pfn += int(size.sum())
        placed.append((src, src + mem.nodes[1].start_pfn, o))
    return mem, placed


def _faults(faults: dict, seed: int) -> FaultInjector:
    inj = FaultInjector(seed)
    for name, (p, interval, times) in faults.items():
        inj[name].set(probability=p, interval=interval, times=times)
    return inj


async def _drive(dev, submit, subs, placed, done: list) -> None:
    """Submit each batch (a pause between), give everything time to complete,
    then terminate every channel (a hung descriptor holds its channel)."""
    async with trio.open_nursery() as n:
        n.start_soon(dev.run)
        for (chan, _, pause), (src, dst, order) in zip(subs, placed, strict=True):
            await submit(dev.channels[chan], src, dst, order)
            if pause:
                await trio.sleep(pause)
        if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            await trio.sleep(1.0)
        else:  # real clock: until every channel is idle, or (a descriptor hung)
            with trio.move_on_after(5.0):  # no completion came for 200 ms
                seen = -1
                while any(c.busy for c in dev.channels) and (
                        seen != len(done) or not dev.faults["fail_dma_timeout"].injected):
                    seen = len(done)
                    await trio.sleep(0.2)
        for c in dev.channels:
            await c.terminate_sync()
        n.cancel_scope.cancel()


def _run(scenario, virtual: bool, profile: str, words_per_page: int):
    """Run ``scenario`` on a DmaDevice; returns (completions as
    (time, channel, cookie, status, residue), the device, the memory before
    and after, where each descriptor went)."""
    subs, faults, seed = scenario
    mem, placed = _memory(subs, words_per_page)
    before = mem.arena.copy()
    inj = _faults(faults, seed)
    done: list[tuple] = []
    dev = DmaDevice(0, mem, VirtualClock() if virtual else Clock(),
                    get_profile(profile).dma, inj)
    base = [0]

    async def submit(chan, src, dst, order):
        first = base[0]
        base[0] += src.size
        cid = chan.chan_id

        def complete(cookie, status, residue):
            now = trio.current_time()
            status = np.broadcast_to(status, cookie.shape)
            residue = np.broadcast_to(residue, cookie.shape)
            done.extend((now, cid, int(c), int(s), int(r))
                        for c, s, r in zip(cookie, status, residue, strict=True))
        await chan.submit(src, dst, order, np.arange(first, first + src.size), complete)
    clock = trio.testing.MockClock(autojump_threshold=0) if virtual else None
    trio.run(_drive, dev, submit, subs, placed, done, clock=clock)
    return done, dev, before, mem.arena.copy(), placed


def _check_contract(scenario, got, reports_errors: bool) -> None:
    """Every statement of the module docstring, on one run."""
    subs, _faults_, _ = scenario
    done, dev, before, after, placed = got
    # cookie -> (channel, src, dst, order), in submission order
    desc, cookie = {}, 0
    for (chan, _, _), (src, dst, order) in zip(subs, placed, strict=True):
        for s_, d_, o_ in zip(src.tolist(), dst.tolist(), order.tolist(), strict=True):
            desc[cookie] = (chan, s_, d_, o_)
            cookie += 1
    seen = [c for _, _, c, _, _ in done]
    assert len(seen) == len(set(seen))  # each at most once
    times = [t for t, *_ in done]
    assert times == sorted(times)
    hung = dev.faults["fail_dma_timeout"].injected
    if not hung:
        assert sorted(seen) == list(range(cookie))  # all, exactly once
    nr_chan = dev.model.nr_channels
    moved_total = [0] * nr_chan
    wrong = 0
    for chan in range(nr_chan):
        mine = [c for c in range(cookie) if desc[c][0] == chan]
        completed = [c for _, ch, c, _, _ in done if ch == chan]
        assert completed == mine[:len(completed)]  # in order; a hang cuts the rest
        assert dev.channels[chan].memcpy_count == len(completed)
    wpp = before.shape[1]
    for _, ch, c, status, residue in done:
        _, src, dst, order = desc[c]
        nbytes = PAGE_SIZE << order
        s_words = before[src:src + (1 << order)].reshape(-1)
        d_was = before[dst:dst + (1 << order)].reshape(-1)
        d_now = after[dst:dst + (1 << order)].reshape(-1)
        # how much arrived: the longest prefix of the source now at the destination
        k = int(np.argmax(d_now != s_words)) if (d_now != s_words).any() else d_now.size
        assert (d_now[k:] == d_was[k:]).all()  # the rest untouched
        moved = k * PAGE_SIZE // wpp
        assert moved in (0, nbytes // 2, nbytes)  # the fault points' three outcomes
        moved_total[ch] += moved
        if reports_errors:
            assert (status, residue) == ((-errno.EIO, nbytes) if moved == 0
                                         else (0, nbytes - moved))
        else:
            assert (status, residue) == (0, 0)  # DMA_TRANS_NOERROR, whatever happened
            wrong += moved != nbytes
    assert [c.bytes_transferred for c in dev.channels] == moved_total
    assert dev.unreported_errors == wrong


_SETTINGS = settings(max_examples=25, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(scenario=scenarios((0, 2, 9), 40), profile=st.sampled_from(["zen3-ptdma", "dsa"]))
def test_ring_keeps_the_dmaengine_contract_virtual(scenario, profile):
    """Modelled profiles on the virtual clock, channels interleaving."""
    got = _run(scenario, True, profile, 8)
    _check_contract(scenario, got, get_profile(profile).dma.reports_errors)


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios((0, 2, 4), 24))
def test_ring_keeps_the_dmaengine_contract_real_clock(scenario):
    """``native`` on the real clock: real bytes, copy threads."""
    subs, faults, seed = scenario
    scenario = ([(chan, orders, 0.0) for chan, orders, _ in subs], faults, seed)
    warm = np.zeros(1, dtype=np.int64)
    copy_folios(0, 0, warm, warm, np.zeros(1, dtype=np.int8))  # compiled before timing
    copy_folio_prefixes(0, 0, warm, warm, warm)
    got = _run(scenario, False, "native", 512)
    _check_contract(scenario, got, get_profile("native").dma.reports_errors)


_NO_FAULTS = {name: (0, 1, -1) for name in _FAULTS}


def test_channels_complete_out_of_order_across_channels():
    """zen3-ptdma, channels 0 and 2 on different engines: channel 0 gets 16
    2 MiB folios (each >= 2 MiB / 14 GB/s = 150 us), then channel 2 sixteen
    4K folios (a few us in all): all of channel 2's complete before any of
    channel 0's, so the completion order is 16..31 then 0..15."""
    subs = [(0, [9] * 16, 0.0), (2, [0] * 16, 0.0)]
    done = _run((subs, _NO_FAULTS, 0), True, "zen3-ptdma", 8)[0]
    assert [c for _, _, c, _, _ in done] == list(range(16, 32)) + list(range(16))


def test_a_hung_descriptor_holds_its_channel_only():
    """fail_dma_timeout once: channel 0's first descriptor never completes,
    so neither does anything queued behind it; channel 2, on another engine,
    completes its 4; terminate_sync() then ends channel 0's queue.  (Channel
    2 is given its folios 1 us later, so channel 0 takes its queue first.)"""
    subs = [(0, [0] * 4, 1e-6), (2, [0] * 4, 0.0)]
    faults = dict(_NO_FAULTS, fail_dma_timeout=(100, 1, 1))
    done, dev, *_ = _run((subs, faults, 0), True, "zen3-ptdma", 8)
    assert [(ch, c) for _, ch, c, _, _ in done] == [(2, 4), (2, 5), (2, 6), (2, 7)]
    assert dev.faults["fail_dma_timeout"].injected == 1
    assert not dev.channels[0].busy and dev.channels[0].memcpy_count == 0


def test_ring_grows_and_calls_back_once_per_range():
    """A completion spanning three submissions calls each one's callback once,
    with its own cookies; the columns grow past their first capacity."""
    ring = DescRing()
    calls = []
    for k in range(3):
        n = 50
        ring.push(np.arange(n), np.arange(n) + 1000, np.zeros(n, dtype=np.int8),
                  np.arange(n) + 100 * k, lambda c, s, r, k=k: calls.append((k, c.tolist())))
    assert len(ring) == 150 and ring.capacity >= 150
    ring.complete(120, 0, 0)
    assert [(k, c[0], c[-1], len(c)) for k, c in calls] == [
        (0, 0, 49, 50), (1, 100, 149, 50), (2, 200, 219, 20)]
    calls.clear()
    ring.complete(30, np.full(30, -errno.EIO, dtype=np.int32), np.arange(30))
    assert calls == [(2, list(range(220, 250)))]
    assert len(ring) == 0


def test_every_submitter_waiting_on_a_full_ring_gets_in():
    """sdxi's ring holds 512 descriptors: a submission of 512 fills
    it (whichever the scheduler runs first), three more of 200 each wait for
    room at once.  A completion frees room for all of them (each re-checks),
    so all 1112 complete, in submission order per submitter.  Each waiter once made its own event
    and the completion woke only the last one: the others waited forever
    (``bench shared-channels --profile sdxi`` with 4 callers never ended)."""
    subs = [(0, [0] * 512, 0.0)] + [(0, [0] * 200, 0.0)] * 3
    mem, placed = _memory(subs, 8)
    dev = DmaDevice(0, mem, VirtualClock(), get_profile("sdxi").dma, _faults(_NO_FAULTS, 0))
    done = []

    async def main():
        async with trio.open_nursery() as n:
            n.start_soon(dev.run)
            with trio.fail_after(1.0):  # virtual: far past the ~0.2 ms the copies take
                async with trio.open_nursery() as submitters:
                    first = 0
                    for src, dst, order in placed:
                        cookies = np.arange(first, first + src.size)
                        first += src.size
                        submitters.start_soon(dev.channels[0].submit, src, dst, order,
                                              cookies, lambda c, s, r: done.extend(c.tolist()))
                while len(done) < first:
                    await trio.sleep(1e-4)
            n.cancel_scope.cancel()
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert sorted(done) == list(range(1112))
    for lo, hi in ((0, 512), (512, 712), (712, 912), (912, 1112)):
        mine = [c for c in done if lo <= c < hi]
        assert mine == list(range(lo, hi))
