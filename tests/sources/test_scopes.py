"""Counted scopes: registrations of the same root add up, outer roots cover inner ones."""

from __future__ import annotations

from aioduet.sources._scopes import Scopes


def test_a_root_stays_until_its_last_registration_leaves() -> None:
    scopes = Scopes()
    assert scopes.add("/d") is True
    assert scopes.add("/d") is False
    assert scopes.remove("/d") is False
    assert "/d" in scopes
    assert scopes.remove("/d") is True
    assert "/d" not in scopes and len(scopes) == 0
    assert scopes.remove("/d") is False  # never registered: nothing happens


def test_outer_roots_and_cover_compare_whole_components() -> None:
    scopes = Scopes()
    for root in ("/d/a", "/d", "/d/ab", "/e"):
        scopes.add(root)
    assert scopes.outer() == ["/d", "/e"]
    assert sorted(scopes) == ["/d", "/d/a", "/d/ab", "/e"]
    assert scopes.cover("/e/x") and scopes.cover("/d")
    assert not scopes.cover("/ee") and not scopes.cover("/")
