"""The one exception type for bad user input: its message always says how to fix it."""


class ConfigError(ValueError):
    """A setting, model or prompt the framework cannot work with; the message names the fix."""
