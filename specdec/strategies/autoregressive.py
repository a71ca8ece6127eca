"""The baseline: propose nothing, so every step is one ordinary decode step of the target."""

from specdec.strategies.base import Strategy, register


@register
class Autoregressive(Strategy):
    name = "baseline"
