"""The package's layers hold: what each layer may import, the kernels' and strategies' light
imports, at most five function-local imports of fishermask modules, no module over 400 lines and no
function over 100, shard operations called as functions (never by a name in a string), no citation
of a document outside the repository, and a README layout section that names every folder."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fishermask"
MODULES = sorted(PKG.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported fishermask module, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("fishermask"):
                    for alias in child.names:  # `from fishermask.x import y`: y may be a module
                        sub = f"{child.module}.{alias.name}"
                        out.append((sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                                    or (PKG.parent / sub.replace(".", "/")).is_dir()
                                    else child.module, inner))
            elif isinstance(child, ast.Import):
                out.extend((a.name, inner) for a in child.names if a.name.startswith("fishermask"))
            visit(child, inner)

    visit(tree, False)
    return out


ALLOWED = {  # layer (module prefix) -> the fishermask modules it may import (docs/design.md §1)
    "fishermask.kernels": ("fishermask.errors", "fishermask.machine", "fishermask.kernels"),
    "fishermask.data": ("fishermask.errors", "fishermask._compat", "fishermask.plugins",
                        "fishermask.data"),
    "fishermask.models": ("fishermask._compat", "fishermask.errors", "fishermask.plugins",
                          "fishermask.kernels"),
    "fishermask.training": ("fishermask.errors",),
    "fishermask.execution": ("fishermask.errors", "fishermask.kernels", "fishermask.data",
                             "fishermask.plugins", "fishermask.execution"),
    # the executor interface and the in-process executor; never the Ray one
    "fishermask.strategies": ("fishermask.errors", "fishermask.kernels", "fishermask.strategies",
                              "fishermask.plugins", "fishermask.execution.base",
                              "fishermask.execution.local"),
    "fishermask.plugins": ("fishermask.errors", "fishermask._compat"),
    "fishermask.locks": ("fishermask.errors",),
    "fishermask.machine": (),
    "fishermask.tracking.params": (),
    "fishermask.tracking": ("fishermask.errors", "fishermask.config", "fishermask.execution",
                            "fishermask.locks", "fishermask.plugins", "fishermask.data",
                            "fishermask.models", "fishermask.strategies", "fishermask.tracking"),
    "fishermask.loop": ("fishermask.errors", "fishermask.config", "fishermask.preflight",
                        "fishermask.data", "fishermask.execution", "fishermask.models",
                        "fishermask.strategies", "fishermask.training", "fishermask.locks",
                        "fishermask.loop"),
    "fishermask._compat": (),
    "fishermask.errors": (),
}


def test_each_layer_imports_only_from_below():
    bad = []
    for path in MODULES:
        mod = _name(path)
        for prefix, allowed in ALLOWED.items():
            if mod == prefix or mod.startswith(prefix + "."):
                bad += [f"{mod} imports {imp}" for imp, _ in _imports(path)
                        if not any(imp == a or imp.startswith(a + ".") for a in allowed)]
    assert not bad, "\n".join(bad)


def test_nothing_the_config_composes_imports_the_config():
    users = [_name(p) for p in MODULES if any(imp == "fishermask.config" for imp, _ in _imports(p))]
    assert all(u.split(".")[1] in ("loop", "tracking", "sweeps", "reports", "labeling", "cli",
                                   "preflight")
               for u in users), users


def _loaded(modules: str, heavy: tuple[str, ...]) -> list[str]:
    code = (f"import sys, {modules}; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip())


def test_kernels_import_neither_ray_mlflow_pydantic_nor_yaml():
    heavy = ("ray", "mlflow", "pydantic", "yaml")
    assert _loaded("fishermask.kernels, fishermask.fisher, fishermask.selection", heavy) == []


def test_strategies_and_executors_import_neither_ray_nor_mlflow():
    assert _loaded("fishermask.strategies, fishermask.execution", ("ray", "mlflow")) == []


def test_the_named_layers_hold():
    """execution/ imports no strategy, tracking/ nothing of the loop, and the in-process executor
    lives in execution/."""
    for path in MODULES:
        mod, imports = _name(path), [imp for imp, _ in _imports(path)]
        if mod.startswith("fishermask.execution"):
            assert not [i for i in imports if i.startswith("fishermask.strategies")], mod
        if mod.startswith("fishermask.tracking"):
            assert not [i for i in imports if i.startswith("fishermask.loop")], mod
    from fishermask.execution.local import LocalExecutor
    from fishermask.execution.base import PoolExecutor

    assert issubclass(LocalExecutor, PoolExecutor)
    assert not (PKG / "strategies" / "inprocess.py").exists()


def _dynamic_dispatch(path: Path) -> list[str]:
    """``getattr(obj, <not a literal>)`` calls and ``.call(<string>, …)`` calls in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id == "getattr" and len(node.args) >= 2 \
                and not isinstance(node.args[1], ast.Constant):
            found.append(f"{_name(path)}:{node.lineno} getattr by a computed name")
        if isinstance(fn, ast.Attribute) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and fn.attr in ("call", "remote"):
            found.append(f"{_name(path)}:{node.lineno} .{fn.attr}({node.args[0].value!r}, …)")
    return found


def test_no_shard_call_names_a_method_in_a_string():
    places = [p for p in MODULES if _name(p).startswith(("fishermask.execution",
                                                          "fishermask.strategies"))
              or _name(p) in ("fishermask.kernels._driver", "fishermask.kernels._group",
                              "fishermask.kernels._shard")]
    found = [hit for p in places for hit in _dynamic_dispatch(p)]
    assert not found, "\n".join(found)


def test_no_function_over_100_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 100:
                    long.append(f"{_name(path)}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)


def test_at_most_five_function_local_imports():
    local = [f"{_name(p)}: {imp}" for p in MODULES for imp, inner in _imports(p) if inner]
    assert len(local) <= 5, "\n".join(local)


def test_no_module_over_400_lines():
    long = {_name(p): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_docstring_cites_a_document_outside_the_repository():
    cited = [_name(p) for p in MODULES if "DESIGN" in p.read_text()]
    assert not cited, cited
    assert (ROOT / "docs" / "design.md").is_file()


def test_readme_layout_names_every_package_folder():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    folders = sorted({p.parent.relative_to(PKG).parts[0] for p in MODULES if p.parent != PKG})
    missing = [f for f in folders if f"{f}/" not in layout]
    assert not missing, missing
    for name in ("config.py", "cli.py", "models.py", "training.py", "errors.py"):
        assert name in layout
