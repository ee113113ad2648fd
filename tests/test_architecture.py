"""The package's import rules, read from its source (docs/architecture.md states them; `make lint` runs the layer
contract with lint-imports): private names stay in their module, imports sit at the top of the module unless they
put off loading an optional or heavy dependency (and then say which), and the module list of the architecture page
is the modules' own docstrings."""

import ast
from pathlib import Path

from mrl_testing import architecture

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mrl"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("mrl", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        yield name, path, path.read_text()


def _function_imports(tree: ast.Module):
    """Import statements inside a function or method body (module-level ``if``/``try`` blocks do not count)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner


def _imported_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""] if node.level == 0 else []


def test_no_private_names_are_imported_from_other_modules():
    found = []
    for name, path, source in _modules():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mrl"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                if private and node.module != name:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {private} from {node.module}")
    assert not found, "what another module needs is public:\n" + "\n".join(found)


# What may be imported inside a function, and why: loading it costs seconds (measured with `python -c "import x"` on
# the 2-core CI machine), or it belongs to an optional extra that a user may not have installed.
LAZY_DEPENDENCIES = {
    "torch": "10 s; `import mrl` and `--help` stay instant",
    "lightning": "tens of seconds",
    "torchvision": "tens of seconds",
    "timm": "tens of seconds",
    "litdata": "over 10 s",
    "sklearn": "about 10 s",
    "transformers": "the `text` extra; seconds",
    "sentence_transformers": "the `text` extra; tens of seconds",
    "datasets": "the `hub` extra; seconds",
    "pyarrow": "comes with the `hub` and `retrieval` extras",
    "pandas": "seconds",
    "wandb": "seconds; only where something is logged",
    "wandb_workspaces": "the `dashboard` extra",
    "matplotlib": "seconds; only where a chart is drawn",
    "hydra": "over a second; only the entry points compose configs",
    "faiss": "the `retrieval` extra",
    "lancedb": "the `retrieval` extra",
    "pymilvus": "the `retrieval` extra",
    "milvus_lite": "the `retrieval` extra",
}


def test_imports_inside_functions_say_why():
    """A lazy import puts off an optional or heavy dependency (LAZY_DEPENDENCIES says which and why); a lazy import
    of the package's own modules says on its line, or the line above, what it puts off (``# lazy: ...``)."""
    found = []
    for _, path, source in _modules():
        lines = source.splitlines()
        for node in _function_imports(ast.parse(source)):
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            for module in _imported_modules(node):
                top = module.split(".")[0]
                if top == "mrl":
                    said = "# lazy:" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("# lazy:")
                    if not said:
                        found.append(f"{where}: {module} imported inside a function without a '# lazy: <why>' comment")
                elif top not in LAZY_DEPENDENCIES:
                    found.append(f"{where}: {module} is neither optional nor slow to import: import it at the top")
    assert not found, "\n".join(found)


def test_the_architecture_page_lists_every_module_from_its_docstring(capsys):
    assert architecture.main(["--check"]) == 0, capsys.readouterr().err
    table = architecture.module_table()
    for name, path, _ in _modules():
        assert f"| `{name}` |" in table
        assert architecture.summary(path), f"{path.relative_to(PACKAGE)} has no module docstring"
