"""Tasks that come and go mid-stream leave the store consistent for the tasks that stay.

Two stores get the same observations. Store ``A`` holds *permanent* slots and *transient* ones
that are registered, partly drained (a batch taken, the rest left pending: a task closed
mid-batch), marked done, signalled OVERFLOW and removed at hypothesis-chosen points; store
``B`` holds only the permanent slots. After every step:

* every permanent slot drains exactly the same runs, in the same order, from both stores:
  nothing a departed or departing task did is visible to the others;
* both stores pass :func:`storecheck.check_store` (no bits, queue entries or OVERFLOW of a
  departed slot, queues agree with the entries' slot bits);
* a slot reused by a new task starts empty: before the next observation, it drains nothing;
* once every task is gone, the store holds nothing.
"""

from __future__ import annotations

import attrs
from hypothesis import example, given, settings
from hypothesis import strategies as st
from storecheck import check_store

from aioduet import Event
from aioduet.store import Key, Observation, Run, Store

MAX_SLOTS = 6
KEYS: list[Key] = [(1, 10, 0), (1, 11, 0), (1, 12, 3), (2, 10, 0)]
MASKS = [
    Event.EXISTS,
    Event.MODIFIED,
    Event.EXISTS | Event.MODIFIED,
    Event.ADDED,
    Event.ADDED | Event.REMOVED,
    Event.DIRTY | Event.FLUSHED,
    Event.EXISTS | Event.DIRTY,
]
EVENTS = [0x1, 0x2, 0x4, 0x8, 0x5]

observation = st.tuples(
    st.sampled_from(KEYS),
    st.integers(0, 3) | st.integers(0, 30),
    st.integers(1, 6),
    st.sampled_from(EVENTS),
)
# Steps: ("ingest", observations), ("drain", who, max runs), ("done", who, key),
# ("overflow", who), ("add", mask, permanent?), ("remove", who), ("forget_relevance", key).
step = st.one_of(
    st.tuples(st.just("ingest"), st.lists(observation, min_size=1, max_size=4)),
    st.tuples(st.just("drain"), st.integers(0, 15), st.integers(1, 4)),
    st.tuples(st.just("done"), st.integers(0, 15), st.sampled_from(KEYS)),
    st.tuples(st.just("overflow"), st.integers(0, 15)),
    st.tuples(st.just("add"), st.sampled_from(MASKS), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 15)),
    st.tuples(st.just("forget_relevance"), st.sampled_from(KEYS)),
)


@attrs.define
class Tenant:
    """A logical task: its mask, whether it stays, and its slot in each store."""

    ident: int
    mask: Event
    permanent: bool
    slot_a: int
    slot_b: int = -1
    fresh: bool = True
    """Registered since the last ingest: nothing may be pending for it (a reused slot)."""


@attrs.define
class Twins:
    """Store A (every tenant) and store B (the permanent tenants only), side by side."""

    answers: dict[tuple[Key, int], bool]
    tenants: list[Tenant] = attrs.field(factory=list)
    ids: int = 0
    a: Store = attrs.field(init=False)
    b: Store = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.a = Store(MAX_SLOTS, relevance=self._relevance_a)
        self.b = Store(MAX_SLOTS, relevance=self._relevance_b)

    def _relevance_a(self, key: Key, slot: int) -> bool:
        (tenant,) = [t for t in self.tenants if t.slot_a == slot]
        return self.answers.get((key, tenant.ident), True)

    def _relevance_b(self, key: Key, slot: int) -> bool:
        (tenant,) = [t for t in self.tenants if t.permanent and t.slot_b == slot]
        return self.answers.get((key, tenant.ident), True)

    def pick(self, who: int) -> Tenant | None:
        return self.tenants[who % len(self.tenants)] if self.tenants else None

    def add(self, mask: Event, permanent: bool) -> None:
        slot = self.a.add_slot(mask)
        if slot < 0:
            return
        tenant = Tenant(self.ids, mask, permanent, slot)
        self.ids += 1
        if permanent:
            tenant.slot_b = self.b.add_slot(mask)
            assert tenant.slot_b >= 0
        self.tenants.append(tenant)

    def remove(self, tenant: Tenant) -> None:
        self.a.remove_slot(tenant.slot_a)
        if tenant.permanent:
            self.b.remove_slot(tenant.slot_b)
        self.tenants.remove(tenant)

    def drain(self, tenant: Tenant, max_runs: int) -> list[Run]:
        runs = self.a.drain(tenant.slot_a, max_runs)
        overflow = self.a.take_overflow(tenant.slot_a)
        if tenant.fresh:
            assert runs == [], "a new task got what its slot's previous task left"
        if tenant.permanent:
            assert runs == self.b.drain(tenant.slot_b, max_runs), "another task's doing showed"
            assert overflow == self.b.take_overflow(tenant.slot_b)
        return runs

    def check(self) -> None:
        check_store(self.a, {t.slot_a: t.mask for t in self.tenants})
        check_store(self.b, {t.slot_b: t.mask for t in self.tenants if t.permanent})


def run_program(  # noqa: PLR0912 - one branch per step kind
    steps: list[tuple[object, ...]], irrelevant: set[tuple[Key, int]]
) -> None:
    twins = Twins({pair: False for pair in irrelevant})
    twins.add(Event.EXISTS, True)
    twins.add(Event.EXISTS, False)
    twins.check()
    for kind, *args in steps:
        if kind == "ingest":
            observations: list[Observation] = args[0]  # type: ignore[assignment]
            twins.a.ingest(observations)
            twins.b.ingest(observations)
            for tenant in twins.tenants:
                tenant.fresh = False
        elif kind == "add":
            twins.add(args[0], args[1])  # type: ignore[arg-type]
        elif kind == "forget_relevance":
            twins.a.forget_relevance(args[0])  # type: ignore[arg-type]
            twins.b.forget_relevance(args[0])  # type: ignore[arg-type]
        elif (picked := twins.pick(args[0])) is not None:  # type: ignore[arg-type]
            tenant = picked
            if kind == "drain":
                twins.drain(tenant, args[1])  # type: ignore[arg-type]
            elif kind == "done":
                twins.a.set_done(tenant.slot_a, args[1], True)  # type: ignore[arg-type]
                if tenant.permanent:
                    twins.b.set_done(tenant.slot_b, args[1], True)  # type: ignore[arg-type]
            elif kind == "overflow":
                twins.a.signal_overflow(1 << tenant.slot_a)
                if tenant.permanent:
                    twins.b.signal_overflow(1 << tenant.slot_b)
            elif kind == "remove":
                twins.remove(tenant)
        twins.check()
    # Everything left comes out the same for the permanent tenants...
    for tenant in list(twins.tenants):
        twins.drain(tenant, 1 << 20)
    twins.check()
    # ... and when every tenant has gone, nothing is left behind.
    for tenant in list(twins.tenants):
        twins.remove(tenant)
        twins.check()
    assert twins.a.statistics().files == 0


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(step, max_size=30),
    irrelevant=st.sets(st.tuples(st.sampled_from(KEYS), st.integers(0, 5)), max_size=6),
)
@example(  # a transient task closed mid-batch: half drained, then removed
    steps=[
        ("ingest", [((1, 10, 0), 0, 4, 0x1), ((1, 11, 0), 0, 2, 0x1)]),
        ("drain", 1, 1),
        ("remove", 1),
        ("add", Event.ADDED, False),
        ("drain", 1, 4),
    ],
    irrelevant=set(),
)
def test_departing_tasks_leave_nothing_the_others_see(
    steps: list[tuple[object, ...]], irrelevant: set[tuple[Key, int]]
) -> None:
    run_program(steps, irrelevant)
