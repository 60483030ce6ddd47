"""The front door: every public name is exported, documented and listed in __all__."""

from __future__ import annotations

import inspect

import aioduet


def test_all_lists_exactly_the_public_names() -> None:
    # dir(), not vars(): the public names are imported on first use (PEP 562).
    public = {name for name in dir(aioduet) if not name.startswith("_")}
    modules = {name for name in public if inspect.ismodule(getattr(aioduet, name))}
    assert set(aioduet.__all__) == public - modules


def test_every_exported_name_has_a_docstring() -> None:
    for name in aioduet.__all__:
        obj = getattr(aioduet, name)
        assert inspect.getdoc(obj), f"aioduet.{name} has no docstring"


def test_exported_classes_claim_the_package() -> None:
    for name in aioduet.__all__:
        obj = getattr(aioduet, name)
        assert obj.__module__.startswith("aioduet"), name
