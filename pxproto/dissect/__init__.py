"""pxdissect: the Wireshark Lua dissector, generated from the wire spec.

The generator itself is :mod:`pxproto.wire.gen_lua`; this package is its
command line (``pxdissect``) and the install helper.
"""

from pxproto.dissect.install import personal_plugin_dir
from pxproto.wire.gen_lua import EXTRA_FIELDS, field_types, generate

__all__ = ["EXTRA_FIELDS", "field_types", "generate", "personal_plugin_dir"]
