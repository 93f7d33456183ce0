"""What a fresh clone needs: no test reaches the shared data (../shared) except through support.shared_path
(conftest's ``shared`` fixture), which skips with a reason where it is missing."""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shared_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string in code that builds a path to the shared folder: the component "shared"
    or text starting with "../shared" (comments and docstrings that mention it do not count)."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING:
            try:
                value = ast.literal_eval(tok.string)
            except ValueError:
                continue
        elif tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            value = tok.string
        else:
            continue
        if isinstance(value, str) and (value.strip("/") == "shared" or value.startswith("../shared")):
            found.append((tok.start[0], tok.line.strip()))
    return found


def test_the_check_finds_shared_paths() -> None:
    code = ('p = ROOT.parent / "shared" / "data"\nq = f"../shared/{x}"\nr = "../shared/data/clips"\n'
            '# ../shared in a comment\ns = "the ../shared folder"\n')
    assert [line for line, _ in shared_literals(code)] == [1, 2, 3]


def test_only_support_locates_the_shared_data() -> None:
    # support.py is the one owner; this file names the folder only to look for it.
    skip = ("support.py", Path(__file__).name)
    offenders = [f"{f.name}:{line}: {text}" for f in sorted(HERE.glob("*.py")) if f.name not in skip
                 for line, text in shared_literals(f.read_text())]
    assert not offenders, "read the shared data through the shared fixture (support.shared_path):\n" + \
        "\n".join(offenders)
