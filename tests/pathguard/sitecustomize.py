"""Guards the Python processes a guarded test session starts (see refbridge_path_guard.py)."""

import refbridge_path_guard

refbridge_path_guard.install_in_child()
