"""The one exception type for bad user input: its message always says how to fix it; and the
type checks that configs and files are held to (YAML and Hydra overrides give bools, ints,
floats and strings alike)."""

import math


class ConfigError(ValueError):
    """A setting, model or prompt the framework cannot work with; the message names the fix."""


def is_int(value) -> bool:
    """An integer, not a bool (true and false are ints to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, not a bool and not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
