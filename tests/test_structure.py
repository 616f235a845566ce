"""The house's structure: imports flow one way, exchange <- accounts <- trading <- wallets <- earn <-
marketdata <- sandbox, with no cycle between modules (a lazy import counts too), and only the backend objects know
which stack they run on. The graph is grimp's (import-linter's), built from the source."""

import pathlib
import re

import grimp
import pytest

# Each may import only those before it.
LAYERS = ["exchange", "accounts", "trading", "wallets", "earn", "marketdata", "sandbox"]
# Composition roots wire the apps together: they may import any layer.
ROOTS = {"exchange.urls", "exchange.asgi", "exchange.wsgi", "exchange.celery", "exchange.settings"}
ROOT = pathlib.Path(__file__).resolve().parent.parent
ENVIRONMENT_SWITCH = re.compile(r"connection\.vendor|\bvendor\s*==|REDIS_URL|MATCHER_MODE")


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    graph = grimp.build_graph(*LAYERS)
    return {module: {imported for imported in graph.find_modules_directly_imported_by(module)
                     if imported.split(".")[0] in LAYERS}
            for module in graph.modules}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back(imports):
    assert cycles(imports) == []


def test_no_app_imports_a_later_layer(imports):
    against = sorted(
        (importer, imported) for importer, targets in imports.items() for imported in targets
        if importer not in ROOTS and ".management." not in importer
        and LAYERS.index(imported.split(".")[0]) > LAYERS.index(importer.split(".")[0])
    )
    assert against == []


def test_only_settings_and_backend_modules_ask_which_stack_they_run_on():
    branching = sorted(
        str(path.relative_to(ROOT)) for layer in LAYERS for path in (ROOT / layer).rglob("*.py")
        if "migrations" not in path.parts and path.name != "settings.py"
        and "backend" not in str(path.relative_to(ROOT))
        and ENVIRONMENT_SWITCH.search(path.read_text())
    )
    assert branching == []
