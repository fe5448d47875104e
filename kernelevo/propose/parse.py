"""Turning a language model's reply into candidate source: a whole module, or edits to the parent.

Every failure is a :class:`ParseError` whose message is one line the next prompt can show the
model as it is ("edit 2 did not apply: its SEARCH text is not in the parent").
"""

from __future__ import annotations

import ast
import re

EDIT_FORMAT_HELP = """\
Each edit replaces lines of the parent, copied exactly (indentation included), with new lines:
<<<<<<< SEARCH
lines copied from the parent
=======
the lines that replace them
>>>>>>> REPLACE
Edits apply in order, each to the text left by the ones before it. A SEARCH must match exactly one \
place: include enough lines to make it unique, and never leave it empty. To delete lines, leave the \
part after ======= empty."""

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)")
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_SEARCH = re.compile(r"^<{5,9} ?SEARCH\b.*$", re.MULTILINE)
_EDIT = re.compile(
    r"^<{5,9} ?SEARCH\b[^\n]*\n(.*?)^={5,9}[ \t]*\n(.*?)^>{5,9} ?REPLACE\b[^\n]*$", re.MULTILINE | re.DOTALL
)
_DEFINES_MODELNEW = re.compile(r"^class\s+ModelNew\b|^ModelNew\s*=", re.MULTILINE)


class ParseError(ValueError):
    """A reply that cannot become a candidate; ``str()`` is one line a model can act on.
    ``source`` is the module the reply stood for when there was one (a syntax error: worth a fix)."""

    def __init__(self, message: str, source: str | None = None):
        super().__init__(message)
        self.source = source


def _code_blocks(reply: str) -> list[tuple[str, str]]:
    """(language tag, body) of each fenced block; an unclosed last fence runs to the end (a cut reply)."""
    blocks: list[tuple[str, str]] = []
    lines = reply.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, tag = m.group(1), m.group(2).lower()
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close and close[0] == fence[0] and set(close) == {fence[0]} and len(close) >= len(fence):
                break
            body.append(lines[i])
            i += 1
        blocks.append((tag, "\n".join(body)))
        i += 1
    return blocks


def _find(lines: list[str], search: list[str], loose: bool) -> list[int]:
    n = len(search)
    if loose:
        search = [s.rstrip() for s in search]
        return [i for i in range(len(lines) - n + 1) if [x.rstrip() for x in lines[i:i + n]] == search]
    return [i for i in range(len(lines) - n + 1) if lines[i:i + n] == search]


def _apply_edits(reply: str, parent: str) -> str:
    edits = _EDIT.findall(reply)
    markers = len(_SEARCH.findall(reply))
    if len(edits) < markers:
        raise ParseError(f"edit {len(edits) + 1} is malformed: each edit needs a <<<<<<< SEARCH line, "
                         "a ======= line and a >>>>>>> REPLACE line, in that order")
    trailing_newline = parent.endswith("\n")
    lines = parent[:-1].split("\n") if trailing_newline else parent.split("\n")
    for k, (old, new) in enumerate(edits, 1):
        where = "the parent" if k == 1 else f"the parent as edited by edits 1-{k - 1}"
        search = old.split("\n")[:-1] if old else []  # the captured text ends with a newline
        replace = new.split("\n")[:-1] if new else []
        if not any(s.strip() for s in search):
            raise ParseError(f"edit {k} has an empty SEARCH: copy the lines to replace from the parent")
        hits = _find(lines, search, loose=False) or _find(lines, search, loose=True)
        if not hits:
            raise ParseError(f"edit {k} did not apply: its SEARCH text is not in {where} "
                             "(copy the lines exactly, indentation included)")
        if len(hits) > 1:
            raise ParseError(f"edit {k} did not apply: its SEARCH text occurs {len(hits)} times in {where}; "
                             "include more lines to make it unique")
        i = hits[0]
        lines[i:i + len(search)] = replace
    return "\n".join(lines) + ("\n" if trailing_newline else "")


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def validate_source(source: str) -> None:
    """Raise :class:`ParseError` unless ``source`` parses and defines ``ModelNew`` at top level."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ParseError(f"syntax error at line {e.lineno}: {e.msg}") from None
    except ValueError as e:  # e.g. null bytes
        raise ParseError(f"the module cannot be parsed: {e}") from None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    if "ModelNew" in names:
        return
    if not names and not tree.body:
        raise ParseError("the module is empty")
    if "Model" in names:
        raise ParseError("the module defines class Model but no class ModelNew: name the optimized class ModelNew")
    raise ParseError("the module defines no class ModelNew")


def parse_reply(reply: str, parent_source: str | None) -> str:
    """The candidate module a reply stands for: its code block, or its edits applied to the parent."""
    reply = reply.replace("\r\n", "\n")
    if _SEARCH.search(reply):
        if parent_source is None:
            raise ParseError("the reply has SEARCH/REPLACE edits but there is no parent to edit: "
                             "reply with the whole module in one ```python block")
        source = _apply_edits(reply, parent_source)
    else:
        blocks = [body for tag, body in _code_blocks(reply) if tag in _PYTHON_TAGS and body.strip()]
        if not blocks:
            stripped = reply.strip()
            if not (_DEFINES_MODELNEW.search(stripped) and _parses(stripped)):  # else a bare module, unfenced
                raise ParseError("the reply has no ```python code block")
            blocks = [stripped]
        defining = [b for b in blocks if _DEFINES_MODELNEW.search(b)]
        source = max(defining or blocks, key=len).strip("\n") + "\n"
    try:
        validate_source(source)
    except ParseError as e:
        if str(e).startswith("syntax error"):
            raise ParseError(str(e), source) from None
        raise
    return source
