"""Search strategies behind one ask/tell interface."""

from archetype.strategies.base import (
    StoredTrial,
    Strategy,
    list_strategies,
    make_strategy,
    register_strategy,
    supernet_strategies,
)

__all__ = ["StoredTrial", "Strategy", "list_strategies", "make_strategy", "register_strategy", "supernet_strategies"]
