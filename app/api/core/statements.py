"""What a SQL statement does, cheaply: its operation and the main table it touches.

Used by the query metrics and the slow-query fault. The scan runs once per distinct statement
string (bounded LRU cache): SQLAlchemy's compiled cache hands back the same strings, so a request
costs a dictionary lookup, not a parse.
"""

from __future__ import annotations

import re
from functools import lru_cache

OPERATIONS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
OTHER_OPERATION = "OTHER"

# Skipped: string literals, comments, driver placeholders (%(name)s, %s). Kept: words, quoted
# identifiers, parentheses (for the nesting depth) and dots (schema.table).
_TOKEN = re.compile(
    r"""
      (?P<skip>'(?:[^']|'')*'|--[^\n]*|/\*.*?\*/|%\([^)]*\)s|%s)
    | "(?P<quoted>(?:[^"]|"")*)"
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<punct>[().])
    """,
    re.VERBOSE | re.DOTALL,
)

_Token = tuple[int, str, str]  # (parenthesis depth, kind: word|name|punct, value)


def _tokens(statement: str) -> list[_Token]:
    tokens: list[_Token] = []
    depth = 0
    for match in _TOKEN.finditer(statement):
        kind = match.lastgroup
        if kind == "skip":
            continue
        if kind == "word":
            tokens.append((depth, "word", match.group("word").upper()))
        elif kind == "quoted":
            tokens.append((depth, "name", match.group("quoted").replace('""', '"')))
        else:
            value = match.group("punct")
            if value == ")":
                depth -= 1
            tokens.append((depth, "punct", value))
            if value == "(":
                depth += 1
    return tokens


def _name_at(tokens: list[_Token], index: int) -> str | None:
    """The (last part of the possibly schema-qualified) table name starting at index."""
    if index < len(tokens) and tokens[index][1:] == ("word", "ONLY"):
        index += 1
    if index >= len(tokens) or tokens[index][1] == "punct":
        return None
    name = tokens[index]
    while (
        index + 2 < len(tokens)
        and tokens[index + 1][1:] == ("punct", ".")
        and tokens[index + 2][1] != "punct"
    ):
        index += 2
        name = tokens[index]
    # Unquoted identifiers are case-insensitive in SQL (folded to lower case by PostgreSQL).
    return name[2].lower() if name[1] == "word" else name[2]


def _table_after(tokens: list[_Token], start: int, keyword: str, top_level: bool) -> str | None:
    for index in range(start, len(tokens)):
        depth, kind, value = tokens[index]
        if kind == "word" and value == keyword and (depth == 0 or not top_level):
            name = _name_at(tokens, index + 1)
            if name is not None:
                return name
    return None


@lru_cache(maxsize=1024)
def classify(statement: str) -> tuple[str, str | None]:
    """(operation, main table) of a statement; ("OTHER", None) when it is not DML.

    The main table is the one after INTO (INSERT), UPDATE, or the outermost FROM (SELECT,
    DELETE); a SELECT without an outer FROM (`SELECT EXISTS (SELECT ... FROM posts ...)`) takes
    the first FROM at any depth. None when there is no table (`SELECT 1`).
    """
    tokens = _tokens(statement)
    words = [(index, value) for index, (_, kind, value) in enumerate(tokens) if kind == "word"]
    if not words:
        return OTHER_OPERATION, None
    start, operation = words[0]
    if operation == "WITH":
        main = next(
            (
                (index, value)
                for index, value in words
                if value in OPERATIONS and tokens[index][0] == 0
            ),
            None,
        )
        if main is None:
            return OTHER_OPERATION, None
        start, operation = main
    if operation not in OPERATIONS:
        return OTHER_OPERATION, None
    if operation == "INSERT":
        table = _table_after(tokens, start, "INTO", top_level=True)
    elif operation == "UPDATE":
        table = _name_at(tokens, start + 1)
    elif operation == "DELETE":
        table = _table_after(tokens, start, "FROM", top_level=True)
    else:
        table = _table_after(tokens, start, "FROM", top_level=True) or _table_after(
            tokens, start, "FROM", top_level=False
        )
    return operation, table
