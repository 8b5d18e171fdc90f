"""Search strategies behind one ask/tell interface."""

from archetype.strategies.base import Strategy, list_strategies, make_strategy, register_strategy

__all__ = ["Strategy", "list_strategies", "make_strategy", "register_strategy"]
