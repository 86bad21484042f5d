"""The import graph of gl_jax: no cycles, no import against the layer order of docs/architecture.md, and no
module importing another module's private (`_`) names. Every import counts, also those inside functions."""

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gl_jax"


def module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def imports_of(name: str) -> list[tuple[str, list[str], int]]:
    """(imported gl_jax module, names taken from it, line) for every import statement in `name`."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("gl_jax")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # Relative: resolve against this module's package.
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if not base.startswith("gl_jax"):
                continue
            for alias in node.names:
                # `from package import submodule` is an import of the submodule.
                sub = f"{base}.{alias.name}"
                if sub in MODULES:
                    out.append((sub, [], node.lineno))
                else:
                    out.append((base, [alias.name], node.lineno))
    return out


def layer_table() -> list[list[str]]:
    """The layers, lowest first, from the `layers` block of docs/architecture.md."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```text layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md needs the layer order in a ```text layers block"
    layers = []
    for line in block.group(1).splitlines():
        if line.strip():
            layers.append(line.split(":", 1)[1].split())
    return layers


def layer_of(module: str, layers: list[list[str]]) -> int:
    """The layer of the longest prefix of `module` named in the table."""
    best, index = "", None
    for i, entries in enumerate(layers):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > len(best):
                best, index = entry, i
    assert index is not None, f"{module} is in no layer of docs/architecture.md"
    return index


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_layers():
    layers = layer_table()
    wrong = []
    for name in MODULES:
        mine = layer_of(name, layers)
        for target, _, line in imports_of(name):
            theirs = layer_of(target, layers)
            if theirs > mine:
                wrong.append(
                    f"{MODULES[name].relative_to(REPO)}:{line} imports {target} (layer {theirs} > {mine})"
                )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = {name: {t for t, _, _ in imports_of(name) if t in MODULES and t != name} for name in MODULES}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{MODULES[name].relative_to(REPO)}:{line} takes {n} from {target}"
        for name in MODULES
        for target, names, line in imports_of(name)
        for n in names
        if n.startswith("_") and target != name
    ]
    assert not private, "\n".join(private)


def test_the_checks_see_what_they_check():
    """The parser finds imports inside functions, relative imports, and the private names."""
    imports = {t for t, _, _ in imports_of("gl_jax.main")}
    assert "gl_jax.train.loop" in imports  # Imported inside `run`, after the flags are parsed.
    assert layer_of("gl_jax.samplers.pc", layer_table()) < layer_of("gl_jax.train.loop", layer_table())
    assert len(MODULES) > 80
