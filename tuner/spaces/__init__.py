"""Declarative search spaces over optimizer settings."""

from tuner.spaces._params import Param, parse_param
from tuner.spaces._space import LRScaling, SearchSpace, list_spaces, load_space

__all__ = ["LRScaling", "Param", "SearchSpace", "list_spaces", "load_space", "parse_param"]
