"""Calculator: tools the model calls instead of guessing at arithmetic.

Written as an Open WebUI Tools class: each public method is offered to the
model as a function (`calculator__calculate`, `calculator__convert`), its
parameters and description taken from the type hints and the docstring.
"""

import ast
import operator
from typing import Literal

from pydantic import BaseModel, Field

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}

# Metres, kilograms and litres per unit.
_UNITS = {
    "km": ("length", 1000.0),
    "m": ("length", 1.0),
    "mi": ("length", 1609.344),
    "ft": ("length", 0.3048),
    "kg": ("mass", 1.0),
    "lb": ("mass", 0.45359237),
    "l": ("volume", 1.0),
    "gal": ("volume", 3.785411784),
}


class Tools:
    class Valves(BaseModel):
        max_digits: int = Field(12, description="significant digits in answers")
        max_exponent: int = Field(100, description="largest exponent ** accepts")

    def __init__(self):
        self.valves = self.Valves()

    def _eval(self, node):
        if isinstance(node, ast.Expression):
            return self._eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > self.valves.max_exponent:
                raise ValueError(f"exponent larger than {self.valves.max_exponent}")
            result = _BINARY[type(node.op)](left, right)
            if isinstance(result, int) and result.bit_length() > 1024:
                raise ValueError("the result is too large")
            return result
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self._eval(node.operand))
        raise ValueError("only numbers and + - * / // % ** ( ) are allowed")

    def _fmt(self, value) -> str:
        if isinstance(value, float):
            return f"{value:.{self.valves.max_digits}g}"
        return str(value)

    def calculate(self, expression: str) -> str:
        """Evaluate an arithmetic expression exactly.
        :param expression: numbers with + - * / // % ** and parentheses, e.g. "(17 * 23) / 4"
        """
        if len(expression) > 200:
            raise ValueError("expression longer than 200 characters")
        tree = ast.parse(expression, mode="eval")
        return f"{expression} = {self._fmt(self._eval(tree))}"

    def convert(
        self,
        value: float,
        from_unit: Literal["km", "m", "mi", "ft", "kg", "lb", "l", "gal"],
        to_unit: Literal["km", "m", "mi", "ft", "kg", "lb", "l", "gal"],
    ) -> str:
        """Convert a quantity between units of length, mass or volume.
        :param value: the quantity
        :param from_unit: its unit
        :param to_unit: the unit wanted
        """
        kind_a, a = _UNITS[from_unit]
        kind_b, b = _UNITS[to_unit]
        if kind_a != kind_b:
            raise ValueError(f"cannot convert {kind_a} to {kind_b}")
        return f"{self._fmt(value)} {from_unit} = {self._fmt(value * a / b)} {to_unit}"
