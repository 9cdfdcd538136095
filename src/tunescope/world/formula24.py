"""24-point formulas: the exact solver, the safe evaluator and the judge (`tunescope.world.game24`).

The solver searches exactly over rationals (`fractions.Fraction`). The verifier never calls
`eval`: a tokenizer and a recursive-descent parser build the value of the formula in Fractions,
collecting the numbers it uses. `judge` names the outcome of an answer against a hand's values:

    correct        well-formed, numbers = card values (as a multiset), value exactly 24
    partial        well-formed, right numbers, value is not 24
    no_solution    no answer, or an answer without a formula
    wrong_numbers  well-formed, but the numbers are not the card values
    illegal        does not parse (bad syntax, unary minus, division by zero)
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import cache

# ----------------------------------------------------------------------------- solver


Expr = tuple[str, int]  # (text, precedence of its top operator: 1 for + -, 2 for * /, 3 for a number)


def _combine(op: str, a: Expr, b: Expr) -> Expr:
    """Text of `a op b` with only the brackets that precedence needs."""
    left = f"({a[0]})" if op in "*/" and a[1] == 1 else a[0]
    right_needs = {"+": 0, "-": 1, "*": 1, "/": 2}[op]
    right = f"({b[0]})" if b[1] <= right_needs else b[0]
    return f"{left}{op}{right}", (1 if op in "+-" else 2)


def _splits(values: tuple[Fraction, ...]):
    """Each split of a multiset into two non-empty groups (left, right), once per index mask."""
    n = len(values)
    for mask in range(1, 2 ** (n - 1)):  # the last element always goes right
        left = tuple(sorted(values[i] for i in range(n) if mask >> i & 1))
        right = tuple(sorted(values[i] for i in range(n) if not mask >> i & 1))
        yield left, right


@cache
def _reachable(values: tuple[Fraction, ...]) -> dict[Fraction, Expr]:
    """Every value an expression over exactly this multiset can take -> one formula for it.

    Any binary expression tree splits its leaves into two non-empty groups at the root, so the
    reachable set of a multiset is the union over such splits of the pairwise combinations.
    """
    if len(values) == 1:
        return {values[0]: (str(values[0]), 3)}
    out: dict[Fraction, Expr] = {}
    for left, right in _splits(values):
        for a, ea in _reachable(left).items():
            for b, eb in _reachable(right).items():
                out.setdefault(a + b, _combine("+", ea, eb))
                out.setdefault(a * b, _combine("*", ea, eb))
                out.setdefault(a - b, _combine("-", ea, eb))
                out.setdefault(b - a, _combine("-", eb, ea))
                if b != 0:
                    out.setdefault(a / b, _combine("/", ea, eb))
                if a != 0:
                    out.setdefault(b / a, _combine("/", eb, ea))
    return out


@cache
def _solve(values: tuple[Fraction, ...], target: Fraction) -> str | None:
    """Meet in the middle at the root: for each split and each left value, look up the right
    value that would make the target, instead of building the full reachable set."""
    if len(values) == 1:
        return str(values[0]) if values[0] == target else None
    for left, right in _splits(values):
        reach_right = _reachable(right)
        for a, ea in _reachable(left).items():
            wanted = [("+", target - a, False), ("-", a - target, False), ("-", a + target, True)]
            if a != 0:
                wanted += [("*", target / a, False), ("/", target * a, True)]
            if target != 0:
                wanted.append(("/", a / target, False))
            for op, b, b_first in wanted:
                if b in reach_right and not (op == "/" and not b_first and b == 0):
                    eb = reach_right[b]
                    return _combine(op, eb, ea)[0] if b_first else _combine(op, ea, eb)[0]
    return None


def solve(values: list[int], target: int = 24) -> str | None:
    """A formula using each value exactly once that equals `target` exactly, or None."""
    return _solve(tuple(sorted(Fraction(v) for v in values)), Fraction(target))


# ----------------------------------------------------------------------------- verifier

_TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


class FormulaError(ValueError):
    """The formula is not a legal expression (syntax, unary minus, division by zero)."""


def _tokens(text: str) -> list[str]:
    out = []
    for number, other in _TOKEN.findall(text.strip()):
        if number:
            out.append(number)
        elif other.strip():
            out.append({"×": "*", "x": "*", "÷": "/"}.get(other, other))
    return out


def evaluate(formula: str) -> tuple[Fraction, list[int]]:
    """Exact value of a formula over + - * / and brackets, and the numbers it uses.

    Grammar: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := NUMBER | '(' expr ')'. Raises FormulaError for anything else.
    """
    value, numbers, _ = _parse(formula)
    return value, numbers


def formula_steps(formula: str) -> list[str]:
    """The formula as one equation per operation, in evaluation order ("3 - 8/3 = 1/3")."""
    return _parse(formula)[2]


def _parse(formula: str) -> tuple[Fraction, list[int], list[str]]:
    toks = _tokens(formula)
    pos = 0
    numbers: list[int] = []
    steps: list[str] = []

    def apply(op: str, a: Fraction, b: Fraction) -> Fraction:
        if op == "/" and b == 0:
            raise FormulaError("division by zero")
        result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a}[op]
        steps.append(f"{a} {op} {b} = {result}")
        return result

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(toks):
            raise FormulaError("formula ends early")
        pos += 1
        return toks[pos - 1]

    def expr() -> Fraction:
        value = term()
        while peek() in ("+", "-"):
            op = take()
            value = apply(op, value, term())
        return value

    def term() -> Fraction:
        value = factor()
        while peek() in ("*", "/"):
            op = take()
            value = apply(op, value, factor())
        return value

    def factor() -> Fraction:
        tok = take()
        if tok.isdigit():
            numbers.append(int(tok))
            return Fraction(int(tok))
        if tok == "(":
            value = expr()
            if take() != ")":
                raise FormulaError("unbalanced brackets")
            return value
        raise FormulaError(f"unexpected {tok!r}")

    if not toks:
        raise FormulaError("empty formula")
    value = expr()
    if pos != len(toks):
        raise FormulaError(f"unexpected {toks[pos]!r}")
    return value, numbers, steps


def formula_of(answer: str | None) -> str | None:
    """The formula part of an answer: text after 'formula:' (or the whole answer), minus '=24'."""
    if answer is None:
        return None
    m = re.search(r"formula\s*:\s*(.*)", answer, re.IGNORECASE | re.DOTALL)
    text = (m.group(1) if m else answer).strip()
    if "=" in text:
        lhs, _, rhs = text.partition("=")
        text = lhs if rhs.strip() in ("24", "") else text  # any other '=' makes it illegal
    text = text.strip()
    return text or None


def judge(values: list[int], answer: str | None) -> str:
    """Outcome name (a key of SHAPED) for an extracted answer against the hand's card values."""
    formula = formula_of(answer)
    if formula is None:
        return "no_solution"
    try:
        value, numbers = evaluate(formula)
    except (FormulaError, ZeroDivisionError):
        return "illegal"
    if sorted(numbers) != sorted(values):
        return "wrong_numbers"
    return "correct" if value == 24 else "partial"
