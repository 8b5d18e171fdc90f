"""The typed search space: tensor types, operators, spaces and architectures."""

from archetype.searchspace.architecture import Architecture, Choice
from archetype.searchspace.operator import Operator, get_operator, list_operators, make_operator, operator
from archetype.searchspace.space import Candidate, SearchSpace, Slot
from archetype.searchspace.spaces import get_space, list_spaces, register_space
from archetype.searchspace.types import Image, TensorType, Tokens, Vector, Volume, parse_type

__all__ = [
    "Architecture", "Candidate", "Choice", "Image", "Operator", "SearchSpace", "Slot", "TensorType",
    "Tokens", "Vector", "Volume", "get_operator", "get_space", "list_operators", "list_spaces", "make_operator",
    "operator", "parse_type", "register_space",
]
