"""Importing this package registers every built-in strategy."""

from specdec.strategies import autoregressive, draft, eagle, medusa, prompt_lookup  # noqa: F401  (registration)
from specdec.strategies.base import STRATEGIES, Proposal, Request, Strategy, create_strategy, register, strategy_class

__all__ = ["STRATEGIES", "Proposal", "Request", "Strategy", "create_strategy", "register", "strategy_class"]
