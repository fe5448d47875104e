"""Turning a language model's reply into candidate source: a whole module, or edits to the parent.

Reasoning comes off first (``<think>`` blocks, a lone ``</think>`` whose opening tag the
server's template wrote, a leaked analysis channel before the final one): a draft inside it is
never the answer, and a SEARCH marker inside it is not an edit. Among the remaining code, the
last complete module that defines ``ModelNew`` is the answer (a reply that offers two versions
and recommends the second means the second); a ``ModelNew`` block that uses names only other
blocks define is joined with them. Every failure is a :class:`ParseError` whose message is one
line the next prompt can show the model as it is ("edit 2 did not apply: its SEARCH text is not
in the parent").
"""

from __future__ import annotations

import ast
import builtins
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

_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})\s*([^\s`]*)")
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)
_FINAL_CHANNEL = re.compile(r"<\|channel\|>\s*final\s*<\|message\|>|^\s*assistantfinal", re.MULTILINE)
_MODULE_START = re.compile(r"^(?:import |from |@|class |def |#|[A-Za-z_]\w* *=)")
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


def strip_reasoning(reply: str) -> str:
    """The reply without the model's reasoning: ``<think>...</think>`` blocks, everything before a
    closing tag whose opening tag the server's chat template emitted, and a leaked analysis
    channel before the final one."""
    finals = list(_FINAL_CHANNEL.finditer(reply))
    if finals:
        reply = reply[finals[-1].end():]
    reply = _THINK.sub("", reply)
    closes = list(_THINK_CLOSE.finditer(reply))
    if closes:
        reply = reply[closes[-1].end():]
    return reply


def _code_blocks(reply: str) -> list[tuple[str, str]]:
    """(language tag, body) of each fenced block, also when indented inside a list item (the body
    loses the fence's indentation); ``python:path/file.py`` tags count as python. An unclosed last
    fence runs to the end (a cut reply)."""
    blocks: list[tuple[str, str]] = []
    lines = reply.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, tag = m.group(1), m.group(2), m.group(3).lower().split(":")[0]
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close and close[0] == fence[0] and set(close) == {fence[0]} and len(close) >= len(fence):
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip(" \t"))
            i += 1
        blocks.append((tag, "\n".join(body)))
        i += 1
    return blocks


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _joined(blocks: list[str], chosen: int) -> str:
    """Block ``chosen`` with the other blocks that define names it uses but does not define (a
    kernel in one block, ``ModelNew`` in the next), in the reply's order."""
    try:
        tree = ast.parse(blocks[chosen])
    except (SyntaxError, ValueError):
        return blocks[chosen]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    missing = used - _defined(tree) - set(dir(builtins))
    parts = []
    for k, b in enumerate(blocks):
        if k == chosen:
            parts.append(b)
            continue
        try:
            other = _defined(ast.parse(b))
        except (SyntaxError, ValueError):
            continue
        if other & missing and not _DEFINES_MODELNEW.search(b):
            parts.append(b)
            missing -= other
    return "\n\n".join(p.strip("\n") for p in parts)


def _unfenced(reply: str) -> str | None:
    """A module written without a fence, after prose: the first line from which the rest parses
    and defines ``ModelNew``."""
    lines = reply.strip().split("\n")
    for i, line in enumerate(lines):
        if not _MODULE_START.match(line):
            continue
        rest = "\n".join(lines[i:])
        if _DEFINES_MODELNEW.search(rest) and _parses(rest):
            return rest
    return None


def _find(lines: list[str], search: list[str], loose: bool) -> list[int]:
    n = len(search)
    if loose:
        search = [s.rstrip() for s in search]
        return [i for i in range(len(lines) - n + 1) if [x.rstrip() for x in lines[i:i + n]] == search]
    return [i for i in range(len(lines) - n + 1) if lines[i:i + n] == search]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _reindent(lines: list[str], search: list[str], replace: list[str]) -> tuple[int, list[str]] | None:
    """An edit whose lines lost or gained one indentation consistently (or use tabs for spaces):
    where its SEARCH matches exactly one place ignoring indentation, with one shift for every
    line, the REPLACE lines shifted the same way. None otherwise."""
    tabs = [s.replace("\t", "    ") for s in search]
    key = [s.strip() for s in tabs]
    n = len(key)
    hits = [i for i in range(len(lines) - n + 1) if [x.replace("\t", "    ").strip() for x in lines[i:i + n]] == key]
    if len(hits) != 1:
        return None
    i = hits[0]
    shifts = {_indent(lines[i + j].replace("\t", "    ")) - _indent(s) for j, s in enumerate(tabs) if s.strip()}
    if len(shifts) != 1:
        return None
    d = shifts.pop()
    out = []
    for r in (x.replace("\t", "    ") for x in replace):
        if not r.strip():
            out.append("")
        elif d >= 0:
            out.append(" " * d + r)
        elif _indent(r) >= -d:
            out.append(r[-d:])
        else:
            return None  # a REPLACE line less indented than the shift takes away
    return i, out


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
            shifted = _reindent(lines, search, replace)
            if shifted is not None:
                hits, replace = [shifted[0]], shifted[1]
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
    reply = strip_reasoning(reply.replace("\r\n", "\n"))
    if _SEARCH.search(reply):
        if parent_source is None:
            raise ParseError("the reply has SEARCH/REPLACE edits but there is no parent to edit: "
                             "reply with the whole module in one ```python block")
        source = _apply_edits(reply, parent_source)
    else:
        blocks = [body for tag, body in _code_blocks(reply) if tag in _PYTHON_TAGS and body.strip()]
        if not blocks:
            bare = _unfenced(reply)
            if bare is None:
                raise ParseError("the reply has no ```python code block")
            blocks = [bare]
        defining = [k for k, b in enumerate(blocks) if _DEFINES_MODELNEW.search(b)]
        complete = [k for k in defining if _parses(blocks[k])]
        if complete or defining:
            source = _joined(blocks, (complete or defining)[-1])
        else:
            source = max(blocks, key=len)
        source = source.strip("\n") + "\n"
    try:
        validate_source(source)
    except ParseError as e:
        if str(e).startswith("syntax error"):
            raise ParseError(str(e), source) from None
        raise
    return source
