"""The house: no import circles between condiff's modules or packages, and no long functions
(each on about one screen), so every feature has a room of its own."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "condiff"
LONGEST = 100  # lines per function; the Triton kernels are exempt (one kernel, one function)


def _modules() -> dict[str, Path]:
    mods = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _imports(tree: ast.AST, mods: dict[str, Path]) -> set[str]:
    """condiff modules imported anywhere in the file (in functions too), but not under
    ``if TYPE_CHECKING``."""
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING":
            skip |= {id(x) for x in ast.walk(n)}
    out = set()
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("condiff"):
            out |= {
                f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in mods else n.module
                for a in n.names
            }
        elif isinstance(n, ast.Import):
            out |= {a.name for a in n.names if a.name.startswith("condiff")}
    return out & set(mods)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    # package __init__ files only map names to modules lazily (condiff._lazy): not a tie
    return {
        m: set() if p.name == "__init__.py" else _imports(ast.parse(p.read_text()), mods) - {m}
        for m, p in mods.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        state[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_module_imports_itself_back():
    assert _cycle(_graph()) is None


def test_no_two_packages_import_each_other():
    def pkg(m: str) -> str:
        return ".".join(m.split(".")[:2])

    graph = _graph()
    pairs = {(pkg(a), pkg(b)) for a in graph for b in graph[a] if pkg(a) != pkg(b)}
    assert {p for p in pairs if p[::-1] in pairs} == set()


def test_the_checker_sees_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_function_is_longer_than_a_screen():
    long = []
    for p in SRC.rglob("*.py"):
        if p.name == "triton_attention.py":
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = n.end_lineno - n.lineno + 1
                if lines > LONGEST:
                    long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({lines} lines)")
    assert long == []
