"""Declarative search spaces over optimizer settings."""

from tuner.spaces._params import Param, parse_param
from tuner.spaces._space import SearchSpace, list_spaces, load_space

__all__ = ["Param", "SearchSpace", "list_spaces", "load_space", "parse_param"]
