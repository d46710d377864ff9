"""Expand-only migrations: recognise SQL that would break the release still serving.

During a rolling deploy or a canary the previous release keeps running against the migrated
schema, so a migration may only add. Dropping, renaming, retyping or tightening needs an explicit
flag (`allow_contracting_migrations`).
"""

from __future__ import annotations

import re

_CONTRACTING = [
    (re.compile(r"\bDROP\s+TABLE\b", re.I), "drops a table"),
    (re.compile(r"\bDROP\s+COLUMN\b", re.I), "drops a column"),
    (re.compile(r"\bRENAME\s+(COLUMN\s+|TO\b)", re.I), "renames a table or column"),
    (re.compile(r"\bALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE\b", re.I), "changes a column type"),
    (re.compile(r"\bALTER\s+COLUMN\s+\S+\s+SET\s+NOT\s+NULL\b", re.I), "makes a column NOT NULL"),
]


def _statements(sql: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]


def contracting_statements(sql: str) -> list[tuple[str, str]]:
    """(statement, why) for every statement in `sql` that is not expand-only."""
    found = []
    for statement in _statements(sql):
        for pattern, why in _CONTRACTING:
            if pattern.search(statement):
                found.append((" ".join(statement.split()), why))
                break
    return found
