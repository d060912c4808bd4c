"""Diagnostics: the device check (`python -m iclebm check-device`) and the virtual device that
lets the CPU catch device mixing."""
