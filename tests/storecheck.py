"""A structural check of a :class:`aioduet.store.Store`: what "consistent" means inside it.

The store keeps the same facts in several places (a packed nibble per slot in each pending
page, per-entry slot bits, per-slot queues, the overflow bits). The cancellation tests call
:func:`check_store` after every step: whatever was cancelled, those places must agree, and
no trace of a departed slot may remain where a later task reusing the slot would find it.
"""

from __future__ import annotations

from aioduet.store import Store, effective_mask
from aioduet.store._slots import NIBBLE, nibbles_of


def check_store(store: Store, masks: dict[int, int]) -> None:  # noqa: PLR0912 - one per fact
    """Assert that ``store`` is consistent and holds slots for exactly ``masks``.

    Args:
        store: the store to inspect.
        masks: slot -> registration mask of every task that should be registered.
    """
    active = 0
    for slot in masks:
        active |= 1 << slot
    assert store.active_slots == active, (bin(store.active_slots), sorted(masks))
    slots = store._slots
    files = store._files
    queues = store._queues
    for slot in range(store.max_slots):
        if slot in masks:
            want, cancels = effective_mask(masks[slot])  # type: ignore[arg-type]
            assert slots.want[slot] == want
            assert (slots.cancel_lo >> (4 * slot)) & NIBBLE == cancels
        else:
            assert not queues[slot], f"departed slot {slot} still has a queue"
            assert not store._overflow & (1 << slot), f"departed slot {slot} has an OVERFLOW due"
            assert (slots.cancel_lo >> (4 * slot)) & NIBBLE == 0
        for key, entry in queues[slot].items():
            assert files.get(key) is entry, f"slot {slot} queues {key}, which the store forgot"
            assert entry.queued & (1 << slot)
    for key, entry in files.items():
        assert entry.key == key
        for bits, what in (
            (entry.seen, "seen"),
            (entry.relevant, "relevant"),
            (entry.done, "done"),
            (entry.queued, "queued"),
        ):
            assert not bits & ~active, f"{key}: {what} bits {bin(bits)} of departed slots"
        assert not entry.relevant & ~entry.seen, f"{key}: relevant but undecided"
        assert entry.route == nibbles_of(entry.relevant & ~entry.done), f"{key}: stale route"
        for slot in range(store.max_slots):
            if entry.queued & (1 << slot):
                assert queues[slot].get(key) is entry, f"{key} marked queued for {slot}, absent"
        for index, packed in entry.pages.items():
            assert packed, f"{key} page {index}: an empty entry is kept"
            assert not packed & ~nibbles_of(active), f"{key} page {index}: departed slot bits"
            for slot in masks:
                nibble = packed >> (4 * slot) & NIBBLE
                if not nibble:
                    continue
                assert nibble & ~slots.want[slot] == 0, f"{key}:{index} unwanted bits"
                lo = (slots.cancel_lo >> (4 * slot)) & NIBBLE
                assert not nibble & (nibble >> 1) & lo, f"{key}:{index} an uncancelled pair"
                # Pending state nobody will drain would be lost for the task.
                assert entry.queued & (1 << slot), f"{key}:{index} pending for {slot}, unqueued"
    outside = store._outside
    for (dev, ino), key in store._latest.items():
        assert (key in files or key in outside) and key[:2] == (dev, ino)
    for key, decided in outside.items():
        assert key not in files, f"{key} is parked and has an entry"
        assert not decided & ~active, f"{key} parked with departed slots {bin(decided)}"
    if not active:
        assert not files, f"no task is registered, yet the store holds {len(files)} entries"
