"""Run configurations: each module's `get_config()` returns a `DistillConfig`.

The docstring of every config gives the exact launch command, the hardware it was sized for and
the expected time/result where one has been measured.
"""
