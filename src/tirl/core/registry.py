"""Name -> function registries: the config picks an implementation by name.

>>> TABLE = {}
>>> register = registrar(TABLE, "widget")
>>> @register("a")
... def a(): return 1
>>> getter(TABLE, "widget")("b")
Traceback (most recent call last):
...
ValueError: unknown widget 'b' (known: ['a'])
"""

from __future__ import annotations

from collections.abc import Callable


def registrar(table: dict[str, Callable], kind: str) -> Callable[[str], Callable]:
    """A decorator factory ``register(name)`` that adds a function to ``table`` once."""
    def register(name: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            table[name] = fn
            return fn
        return deco
    return register


def getter(table: dict[str, Callable], kind: str) -> Callable[[str], Callable]:
    """``get(name)``: the registered function; an unknown name lists the known ones."""
    def get(name: str) -> Callable:
        try:
            return table[name]
        except KeyError:
            raise ValueError(f"unknown {kind} {name!r} (known: {sorted(table)})") from None
    return get
