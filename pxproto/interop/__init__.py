"""Adapters that teach other packet libraries Parallax, from the same layout tables.

- :mod:`pxproto.interop.scapy`: scapy layers; ``bind()`` / ``unbind()``.
- :mod:`pxproto.interop.dpkt`: dpkt classes; ``register()`` / ``unregister()``.

Importing an adapter changes nothing in the other library: the EtherType
bindings exist only between the explicit bind/register call and its undo.
Each needs its library (``pip install 'pxproto[interop]'``); this package
imports neither.
"""
