"""The package's structure: its import graph has no cycle (late imports inside functions
count too), and each piece of knowledge has one home."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lru_keras"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: set of lru_keras modules it imports}, from every import statement."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from package import module` imports the module; `from module import name`
                # the module.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_is_read():
    graph = import_graph()
    assert "lru_keras.layers.reuse" in graph["lru_keras.layers"]
    assert "lru_keras.layers.channel_order" in graph["lru_keras.layers.reuse"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_lru_keras_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("module", ["lru_keras.layers", "lru_keras.zoo.weights"])
def test_low_level_modules_import_no_model_builder(module):
    """Layers know no model; the weights registry finds builders through the registry."""
    graph = import_graph()
    reachable, todo = set(), [module]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    builders = {"lru_keras.zoo.lrunet", "lru_keras.zoo.convmixer", "lru_keras.zoo.se_resnet",
                "lru_keras.zoo.reaf_resnet", "lru_keras.zoo.reaf_plus"}
    assert not reachable & builders


def test_the_lru_recurrence_and_the_shuffle_are_written_once():
    """Every formulation of a reuse block goes through `reuse_chain`, and every channel
    shuffle through `channel_order` (no reshape/transpose shuffle written elsewhere)."""
    sources = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    chain_users = sorted(path.name for path, text in sources.items()
                         if "reuse_chain(" in text)
    assert chain_users == ["reuse.py", "worker.py"]
    for path, text in sources.items():
        if path.name != "channel_order.py":
            assert "swapaxes" not in text and "tf.transpose" not in text, path
            assert "def shuffle_permutation" not in text, path
