"""Replies to candidate source: whole modules in fences, search/replace edits, and the errors a model sees."""

from __future__ import annotations

import pytest

from kernelevo.propose.parse import EDIT_FORMAT_HELP, ParseError, parse_reply, validate_source

MODULE = """import torch


class ModelNew(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        return y
"""

PARENT = """import torch

SCALE = 2


class ModelNew(torch.nn.Module):
    def forward(self, x):
        y = x * SCALE
        return y
"""


def fence(body: str, tag: str = "python") -> str:
    return f"```{tag}\n{body}```"


def edit(old: str, new: str) -> str:
    return f"<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n"


@pytest.mark.parametrize("tag", ["python", "py", ""])
def test_whole_module_in_one_block(tag: str) -> None:
    reply = f"Here is a faster kernel.\n\n{fence(MODULE, tag)}\n\nIt fuses the scale."
    assert parse_reply(reply, None) == MODULE
    assert parse_reply(reply, PARENT) == MODULE  # a parent does not force edits


def test_several_blocks_take_the_longest_defining_modelnew() -> None:
    helper = "import torch\n\n\nclass ModelNew(torch.nn.Module):\n    pass\n"
    noise = "# " + "x" * 400 + "\nclass Model:\n    pass\n"  # longest, but no ModelNew
    reply = f"{fence('pip install triton', 'bash')}\n{fence(helper)}\n{fence(noise)}\n{fence(MODULE, 'py')}"
    assert parse_reply(reply, None) == MODULE


def test_unfenced_non_python_block_is_ignored() -> None:
    with pytest.raises(ParseError, match="no ```python code block"):
        parse_reply(fence("nvcc -O3 kernel.cu", "bash"), None)


def test_no_code() -> None:
    with pytest.raises(ParseError) as e:
        parse_reply("I would make the block size bigger and use more warps.", None)
    assert str(e.value) == "the reply has no ```python code block"


def test_bare_module_without_fence_is_accepted() -> None:
    assert parse_reply(MODULE, None) == MODULE


def test_wrong_class_name() -> None:
    body = MODULE.replace("ModelNew", "Model")
    with pytest.raises(ParseError, match="defines class Model but no class ModelNew"):
        parse_reply(fence(body), None)
    with pytest.raises(ParseError) as e:
        parse_reply(fence(MODULE.replace("ModelNew", "Fast")), None)
    assert str(e.value) == "the module defines no class ModelNew"


def test_modelnew_must_be_top_level() -> None:
    nested = "def make():\n    class ModelNew:\n        pass\n    return ModelNew\n"
    with pytest.raises(ParseError, match="no class ModelNew"):
        validate_source(nested)


def test_syntax_error_names_the_line() -> None:
    broken = MODULE.replace("y = x * 2", "y = x * (2")
    with pytest.raises(ParseError) as e:
        parse_reply(fence(broken), None)
    msg = str(e.value)
    assert msg.startswith("syntax error at line 6:"), msg
    assert "\n" not in msg


def test_edits_apply_in_order() -> None:
    reply = (
        "Two edits:\n```\n"
        + edit("SCALE = 2\n", "SCALE = 3\nOFFSET = 1\n")
        + "```\n"
        + edit("        y = x * SCALE\n", "        y = x * SCALE + OFFSET\n")
        + edit("SCALE = 3\n", "SCALE = 4\n")  # sees edit 1's text, not the parent's
    )
    out = parse_reply(reply, PARENT)
    assert out == PARENT.replace("SCALE = 2\n", "SCALE = 4\nOFFSET = 1\n").replace(
        "x * SCALE\n", "x * SCALE + OFFSET\n")


def test_edit_can_delete_lines() -> None:
    out = parse_reply(edit("        y = x * SCALE\n        return y\n", "        return x * SCALE\n")
                      + edit("\nSCALE = 2\n", ""), PARENT)
    assert "SCALE = 2" not in out and "return x * SCALE" in out
    assert out.endswith("\n")


def test_edit_not_found_names_the_edit() -> None:
    reply = edit("SCALE = 2\n", "SCALE = 3\n") + edit("    return x\n", "    return x + 1\n")
    with pytest.raises(ParseError) as e:
        parse_reply(reply, PARENT)
    assert str(e.value).startswith("edit 2 did not apply: its SEARCH text is not in the parent")


def test_ambiguous_edit() -> None:
    parent = PARENT + "\n\nclass Other(torch.nn.Module):\n    def forward(self, x):\n" \
        "        y = x * SCALE\n        return y\n"
    with pytest.raises(ParseError, match=r"^edit 1 did not apply: its SEARCH text occurs 2 times"):
        parse_reply(edit("        return y\n", "        return y + 0\n"), parent)
    out = parse_reply(edit("class Other(torch.nn.Module):\n    def forward(self, x):\n        y = x * SCALE\n",
                           "class Other(torch.nn.Module):\n    def forward(self, x):\n        y = x / SCALE\n"), parent)
    assert out.count("x / SCALE") == 1 and out.count("x * SCALE") == 1


def test_edit_that_breaks_syntax() -> None:
    with pytest.raises(ParseError, match="^syntax error at line 8"):
        parse_reply(edit("        y = x * SCALE\n", "        y = x * (SCALE\n"), PARENT)


def test_edits_without_parent() -> None:
    with pytest.raises(ParseError, match="no parent"):
        parse_reply(edit("SCALE = 2\n", "SCALE = 3\n"), None)


def test_malformed_edit() -> None:
    reply = edit("SCALE = 2\n", "SCALE = 3\n") + "<<<<<<< SEARCH\nSCALE = 3\n=======\nSCALE = 4\n"
    with pytest.raises(ParseError, match="^edit 2 is malformed"):
        parse_reply(reply, PARENT)


def test_empty_search_is_refused() -> None:
    with pytest.raises(ParseError, match="^edit 1 has an empty SEARCH"):
        parse_reply(edit("", "X = 1\n"), PARENT)


def test_trailing_whitespace_fallback() -> None:
    parent = PARENT.replace("SCALE = 2\n", "SCALE = 2   \n")
    out = parse_reply(edit("SCALE = 2\n", "SCALE = 5\n"), parent)  # the model dropped the trailing spaces
    assert out == parent.replace("SCALE = 2   \n", "SCALE = 5\n")
    # ...and an exact match wins over a looser one
    parent2 = PARENT + "SCALE = 2 \n"
    with pytest.raises(ParseError, match="occurs 2 times"):  # loose: both lines match
        parse_reply(edit("SCALE = 2  \n", "SCALE = 5\n"), parent2)
    assert parse_reply(edit("SCALE = 2\n", "SCALE = 5\n"), parent2).count("SCALE = 5\n") == 1


def test_crlf_reply() -> None:
    reply = edit("SCALE = 2\n", "SCALE = 7\n").replace("\n", "\r\n")
    assert "SCALE = 7\n" in parse_reply(reply, PARENT)


def test_validate_source_and_help() -> None:
    validate_source(MODULE)
    with pytest.raises(ParseError, match="syntax error at line 1"):
        validate_source("def (:\n")
    assert "<<<<<<< SEARCH" in EDIT_FORMAT_HELP and ">>>>>>> REPLACE" in EDIT_FORMAT_HELP


# -- replies the way real models and servers write them --------------------------------------------

DRAFT = MODULE.replace("y = x * 2", "y = x * 2  # draft inside the reasoning, longer than the answer\n" + "        " +
                       "# " + "padding " * 40)
ALT = MODULE.replace("y = x * 2", "y = x + x")


@pytest.mark.parametrize("reply", [
    f"<think>\nLet me draft it.\n{fence(DRAFT)}\nNo, simpler.\n</think>\n\nFinal answer:\n{fence(MODULE)}",
    f"Let me draft it (the server's template opened the think tag).\n{fence(DRAFT)}\n</think>\n{fence(MODULE)}",
    f"<|channel|>analysis<|message|>Draft:\n{fence(DRAFT)}<|end|><|start|>assistant<|channel|>final<|message|>"
    f"Here it is.\n{fence(MODULE)}",
    f"analysisWe could write:\n{fence(DRAFT)}\nassistantfinal Here it is.\n{fence(MODULE)}",
])
def test_reasoning_is_dropped_before_looking_for_code(reply: str) -> None:
    assert parse_reply(reply, None) == MODULE  # never the (longer) draft from the reasoning


def test_the_last_complete_module_wins_over_a_longer_earlier_one() -> None:
    reply = f"Option A:\n{fence(DRAFT)}\nOption B is faster; use the second:\n{fence(ALT)}"
    assert parse_reply(reply, None) == ALT
    cut = f"Option A:\n{fence(ALT)}\nOption B:\n```python\nimport torch\nclass ModelNew(torch.nn.Module):\n    def f("
    assert parse_reply(cut, None) == ALT  # a broken last block does not beat a complete one


def test_a_kernel_block_and_a_modelnew_block_are_one_module() -> None:
    kernel = "import torch\n\n\ndef _double(x):\n    return x * 2\n"
    model = "class ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return _double(x)\n"
    reply = f"The kernel:\n{fence(kernel)}\nAnd the module:\n{fence(model)}"
    source = parse_reply(reply, None)
    assert source.index("def _double") < source.index("class ModelNew")
    validate_source(source)
    alone = fence("import torch\n\nclass ModelNew(torch.nn.Module):\n    pass\n")
    assert "_double" not in parse_reply(f"{fence(kernel)}\n{alone}", None)  # nothing it needs: not joined


@pytest.mark.parametrize("reply", [
    "Here:\n```python:kernels/softmax/candidate.py\n" + MODULE + "```\n",
    "Steps:\n1. Write the kernel:\n    ```python\n" + "".join("    " + line + "\n" if line else "\n"
                                                         for line in MODULE.split("\n")[:-1]) + "    ```\n",
    "Here is the module, without a fence.\n\n" + MODULE,
    "<think>plan</think>\n" + MODULE,
])
def test_fence_dialects_and_unfenced_modules(reply: str) -> None:
    assert parse_reply(reply, None) == MODULE


def test_edits_that_lost_or_gained_one_indentation_level_are_reindented() -> None:
    lost = edit("y = x * SCALE\nreturn y\n", "y = x * SCALE * 2\nreturn y\n")
    assert "        y = x * SCALE * 2\n        return y\n" in parse_reply(lost, PARENT)
    tabs = edit("\t\ty = x * SCALE\n", "\t\ty = x * 3\n")
    assert "        y = x * 3\n" in parse_reply(tabs, PARENT)
    gained = edit("            y = x * SCALE\n", "            y = x * 4\n")
    assert "        y = x * 4\n" in parse_reply(gained, PARENT)
    inconsistent = edit("y = x * SCALE\n        return y\n", "y = 1\n")  # one line shifted, one not
    with pytest.raises(ParseError, match="did not apply"):
        parse_reply(inconsistent, PARENT)


def test_a_search_marker_inside_reasoning_is_not_an_edit() -> None:
    reply = f"<think>maybe\n<<<<<<< SEARCH\nfoo\n=======\nbar\n>>>>>>> REPLACE\n</think>\n{fence(MODULE)}"
    assert parse_reply(reply, PARENT) == MODULE
