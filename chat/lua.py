"""Lua scripts' KEYS and ARGV, named once.

A script's ``Signature`` lists its keys and arguments in call order. The script's Lua starts
with locals of those names (``local seq_key = KEYS[1]``), and the caller orders its values by
the same names (``Signature.order``; a per-message call that builds its lists by hand, to spare
the dicts, is held to the names by a unit test), so a key can neither be read under another
name nor be passed in another place. A script taking a variable number of items (one per room
op, say) declares one item's keys and arguments too: ``each_item`` opens the loop that binds
them. A script whose keys are all items (a batch of buckets, say) declares no fixed keys:
its first item's key routes its call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chat.shards import Script

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Lua's keywords, the script's globals, and the names the preamble itself binds.
_TAKEN = """
and break do else elseif end false for function goto if in local nil not or repeat return then
true until while KEYS ARGV redis item_count i
"""
_RESERVED = frozenset(_TAKEN.split())


@dataclass(frozen=True, slots=True)
class Signature:
    """A script's keys and arguments, in call order; ``item_*`` repeat once per item."""

    keys: tuple[str, ...]
    args: tuple[str, ...] = ()
    item_keys: tuple[str, ...] = ()
    item_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.keys and not self.item_keys:
            raise ValueError("Signature declares no keys: a script's first key routes its call")
        if self.item_args and not self.item_keys:
            raise ValueError("Signature.item_args needs item_keys: items are counted by their keys")
        seen: set[str] = set()
        for name in (*self.keys, *self.args, *self.item_keys, *self.item_args):
            if not _NAME.match(name) or name in _RESERVED:
                raise ValueError(f"Signature: {name!r} cannot be a Lua local's name")
            if name in seen:
                raise ValueError(f"Signature: {name!r} is declared twice")
            seen.add(name)

    def preamble(self) -> str:
        """The Lua binding each fixed key and argument to its name (and ``item_count``)."""
        lines = [_bind(self.keys, "KEYS", "0"), _bind(self.args, "ARGV", "0")]
        if self.item_keys:
            lines.append(f"local item_count = (#KEYS - {len(self.keys)}) / {len(self.item_keys)}")
        return "".join(f"{line}\n" for line in lines if line)

    def each_item(self) -> str:
        """``for i = 1, item_count do`` and the locals of item ``i``'s keys and arguments."""
        keys = f"{len(self.keys)} + {len(self.item_keys)} * (i - 1)"
        args = f"{len(self.args)} + {len(self.item_args)} * (i - 1)"
        lines = [_bind(self.item_keys, "KEYS", keys), _bind(self.item_args, "ARGV", args)]
        return "for i = 1, item_count do\n" + "".join(f"  {line}\n" for line in lines if line)

    def script(self, body: str, prelude: str = "") -> Script:
        """The script: ``prelude`` (shared Lua functions), this preamble, then ``body``."""
        return Script(prelude + self.preamble() + body)

    def order(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any],
        items: Sequence[tuple[Mapping[str, str], Mapping[str, Any]]] = (),
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV lists of a call, from values named as declared."""
        out_keys = _ordered(self.keys, keys, "keys")
        out_args = _ordered(self.args, args, "args")
        for item_keys, item_args in items:
            out_keys += _ordered(self.item_keys, item_keys, "item_keys")
            out_args += _ordered(self.item_args, item_args, "item_args")
        return out_keys, out_args


def _bind(names: tuple[str, ...], table: str, offset: str) -> str:
    if not names:
        return ""
    start = "" if offset == "0" else f"{offset} + "
    values = ", ".join(f"{table}[{start}{n}]" for n in range(1, len(names) + 1))
    return f"local {', '.join(names)} = {values}"


def _ordered(declared: tuple[str, ...], values: Mapping[str, Any], part: str) -> list[Any]:
    if set(values) != set(declared):
        raise ValueError(
            f"script {part}: got {sorted(values)}, the signature declares {list(declared)}"
        )
    return [values[name] for name in declared]
