"""The methods by name: one line each, ``name -> "module:Class"``, imported on first use.

Adding a method is one module with a :class:`~ovseg.methods.protocol.Method` subclass plus
one line here.
"""

from __future__ import annotations

import importlib

__all__ = ["METHODS", "build_method", "method_class", "method_names"]

METHODS: dict[str, str] = {
    "naclip": "ovseg.methods.naclip:Naclip",
    "sclip": "ovseg.methods.sclip:Sclip",
    "clearclip": "ovseg.methods.clearclip:ClearClip",
    "proxyclip": "ovseg.methods.proxyclip:ProxyClip",
    "trident": "ovseg.methods.trident:Trident",
    "corrclip": "ovseg.methods.corrclip:CorrClip",
    "corrclipv2": "ovseg.methods.corrclipv2:CorrCLIPv2",
    "sam-clip": "ovseg.methods.samclip:SamClip",
    "sam3": "ovseg.methods.sam3:Sam3",
    "naclip+sam3": "ovseg.methods.mixed:NaclipSam3",
    "proxyclip+sam3": "ovseg.methods.mixed:ProxyClipSam3",
    "corrclip+sam3": "ovseg.methods.mixed:CorrClipSam3",
}


def method_names() -> tuple[str, ...]:
    """Every registered method name."""
    return tuple(METHODS)


def method_class(name: str) -> type:
    """The :class:`~ovseg.methods.protocol.Method` subclass registered as ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {name!r}")
    module, _, attr = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def build_method(name: str, **options):
    """An instance of the method ``name`` with ``options`` (validated now)."""
    return method_class(name)(**options)
