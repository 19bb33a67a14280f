"""The package's layers hold: what each layer may import, the kernels' light import, at most five
function-local imports of fishermask modules, no module over 400 lines, no citation of a document
outside the repository, and a README layout section that names every folder."""

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


ALLOWED = {  # layer (module prefix) -> the fishermask modules it may import
    "fishermask.kernels": ("fishermask.errors", "fishermask.kernels"),
    "fishermask.data": ("fishermask.errors", "fishermask._compat", "fishermask.data"),
    "fishermask.models": ("fishermask._compat",),
    "fishermask.training": ("fishermask.errors",),
    "fishermask.strategies": ("fishermask.errors", "fishermask.kernels", "fishermask.strategies"),
    "fishermask.execution": ("fishermask.errors", "fishermask.kernels", "fishermask.strategies",
                             "fishermask.data", "fishermask.execution"),
    "fishermask.tracking.params": (),
    "fishermask.tracking": ("fishermask.errors", "fishermask.config", "fishermask.execution",
                            "fishermask.loop", "fishermask.tracking"),
    "fishermask.loop": ("fishermask.errors", "fishermask.config", "fishermask.preflight",
                        "fishermask.data", "fishermask.execution", "fishermask.models",
                        "fishermask.strategies", "fishermask.training", "fishermask.loop"),
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
    assert all(u.split(".")[1] in ("loop", "tracking", "sweeps", "reports", "cli", "preflight")
               for u in users), users


def test_kernels_import_neither_ray_mlflow_pydantic_nor_yaml():
    code = ("import sys, fishermask.kernels, fishermask.fisher, fishermask.selection; "
            "print(sorted(m for m in ('ray', 'mlflow', 'pydantic', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


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
