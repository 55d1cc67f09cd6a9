"""A calculator for ReAct: arithmetic on numbers with + - * / // % ** and parentheses.

The expression is parsed with Python's ``ast`` module and walked by hand; only number literals,
those operators and unary plus/minus are accepted, so nothing the model writes is ever executed.
Sizes are bounded (expression length, exponents, result size) so that ``9**9**9`` cannot hang the server.
"""

from __future__ import annotations

import ast
import math
import operator
import re

from playground.tools import ToolError

MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 1024
MAX_INT_BITS = 4096  # about 1,200 decimal digits

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SYMBOLS = {"×": "*", "·": "*", "÷": "/", "−": "-", "–": "-", "^": "**"}
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")

Number = int | float


def normalise_expression(text: str) -> str:
    """Accept how people (and models) write arithmetic: 1,000 × 3, 2^10, `12 / 4 =`."""
    expr = text.strip().strip("`'\"").strip()
    for symbol, replacement in _SYMBOLS.items():
        expr = expr.replace(symbol, replacement)
    expr = _THOUSANDS.sub("", expr)
    return expr.rstrip("=? ").strip()


def evaluate(text: str) -> Number:
    """The value of an arithmetic expression, or ToolError saying what is wrong with it."""
    expr = normalise_expression(text)
    if not expr:
        raise ToolError("calculator needs an expression, e.g. calculator[(3 + 4) * 12]")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression too long ({len(expr)} characters; at most {MAX_EXPRESSION_CHARS})")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"not an arithmetic expression: {expr!r}") from exc
    return _eval(tree.body)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise ToolError("division by zero") from exc
        except OverflowError as exc:
            raise ToolError("the result is too large") from exc
        if isinstance(value, complex):
            raise ToolError("the result is not a real number (a negative number to a fractional power)")
        return _check(value)
    allowed = "numbers, + - * / // % ** and parentheses"
    found = ast.unparse(node) if hasattr(ast, "unparse") else type(node).__name__
    raise ToolError(f"the calculator only understands {allowed}; it cannot evaluate {found!r}")


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent {exponent} is too large (at most {MAX_EXPONENT})")
    grows = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if grows and abs(base).bit_length() * exponent > MAX_INT_BITS * 2:
        raise ToolError("the result is too large")


def _check(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large (or not a number)")
    return value


def format_number(value: Number) -> str:
    """12.0 -> '12', 0.1 + 0.2 -> '0.3', big floats in scientific notation."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


class Calculator:
    name = "calculator"
    description = "calculator[expression]: evaluates arithmetic such as (12 + 30) * 4 / 3 or 2 ** 10"

    def run(self, arg: str) -> str:
        return format_number(evaluate(arg))
