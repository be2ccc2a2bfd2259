"""Where Wireshark looks for a user's own Lua plugins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

PLUGIN_NAME = "parallax.lua"


def personal_plugin_dir() -> Path:
    """Wireshark's personal Lua plugin folder (Help > About Wireshark > Folders,
    "Personal Lua Plugins"): %APPDATA%\\Wireshark\\plugins on Windows,
    ~/.local/lib/wireshark/plugins elsewhere."""
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"
