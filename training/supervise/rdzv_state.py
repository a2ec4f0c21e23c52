"""torchrun's c10d rendezvous state, read as data: how many nodes joined, without unpickling.

torch keeps a dynamic rendezvous's state in its TCP store as a pickle of `_RendezvousState`, and
anyone who can reach the store's port may write that key. `pickle.loads` of it would run whatever
the writer put there, as this user. This module walks the pickle's opcodes (pickletools.genops)
on a stack of plain values and never imports, looks up or calls anything: a class reference
becomes a `Global` (its two names), an instance a `Built` (its class and the state BUILD gave
it). What it cannot read this way (an opcode outside protocol 2-5's data subset, a stream too
long, too deep or malformed) is `None`, and the viewer says only what it knows without the count.
"""

from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

MAX_BYTES = 1 << 20
MAX_OPS = 200_000


@dataclass(frozen=True)
class Global:
    module: str
    name: str


@dataclass(eq=False)  # identity: instances are dict keys (the participants) and memo entries
class Built:
    cls: Any
    args: Any = ()
    state: Any = field(default=None)


class _Mark:
    pass


_MARK = _Mark()
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_DICT": dict, "EMPTY_LIST": list,
              "EMPTY_TUPLE": tuple, "EMPTY_SET": set}
# Opcodes whose argument is the value they push.
_LITERALS = {"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "BINUNICODE", "SHORT_BINUNICODE",
             "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "INT", "LONG", "FLOAT",
             "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


class Unreadable(ValueError):
    pass


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise Unreadable("no MARK")


def read(data: bytes) -> Any:
    """The pickled value as plain containers, Global and Built; Unreadable when it cannot be."""
    if len(data) > MAX_BYTES:
        raise Unreadable("too long")
    stack: list = []
    memo: dict[int, Any] = {}
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data))):
            if count > MAX_OPS:
                raise Unreadable("too many opcodes")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1:
                    raise Unreadable("stack not one value at STOP")
                return stack[0]
            if name in _LITERALS:
                stack.append(arg)
            elif name in _CONSTANTS:
                value = _CONSTANTS[name]
                stack.append(value() if isinstance(value, type) else value)
            elif name == "MARK":
                stack.append(_MARK)
            elif name in ("MEMOIZE",):
                memo[len(memo)] = stack[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = stack[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo[int(arg)])
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "LIST":
                stack.append(list(_pop_mark(stack)))
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "APPEND":
                value = stack.pop()
                stack[-1].append(value)
            elif name == "APPENDS":
                items = _pop_mark(stack)
                stack[-1].extend(items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                stack[-1][key] = value
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                target = stack[-1]
                for key, value in zip(items[::2], items[1::2], strict=True):
                    target[key] = value
            elif name == "ADDITEMS":
                items = _pop_mark(stack)
                stack[-1].update(items)
            elif name == "FROZENSET":
                stack.append(frozenset(_pop_mark(stack)))
            elif name == "GLOBAL":
                module, _, qualname = str(arg).partition(" ")
                stack.append(Global(module, qualname))
            elif name == "STACK_GLOBAL":
                qualname, module = stack.pop(), stack.pop()
                stack.append(Global(str(module), str(qualname)))
            elif name in ("NEWOBJ", "REDUCE"):
                args, cls = stack.pop(), stack.pop()
                stack.append(Built(cls, args))
            elif name == "NEWOBJ_EX":
                _kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
                stack.append(Built(cls, args))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if not isinstance(target, Built):
                    raise Unreadable("BUILD on a plain value")
                target.state = state
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(stack[-1])
            else:
                raise Unreadable(f"opcode {name}")
    except Unreadable:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, MemoryError) as exc:
        raise Unreadable(f"{type(exc).__name__}: {exc}") from None
    raise Unreadable("no STOP")


def participants(data: bytes) -> int | None:
    """How many nodes a pickled `_RendezvousState` holds as participants; None when unreadable."""
    try:
        state = read(data)
    except Unreadable:
        return None
    if not isinstance(state, Built) or not isinstance(state.cls, Global) or state.cls.name != "_RendezvousState":
        return None
    fields = state.state
    if isinstance(fields, tuple) and len(fields) == 2:  # (dict, slots) from a class with __slots__
        fields = fields[0] if isinstance(fields[0], dict) else fields[1]
    if not isinstance(fields, dict):
        return None
    joined = fields.get("participants")
    return len(joined) if isinstance(joined, dict) else None
