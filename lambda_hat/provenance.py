"""A digest of the lambda_hat code each rule runs, so that editing that code reruns it.

Snakemake reruns a job when its params change. Every rule passes, as a param, the
digest of the code its ``lambda-hat`` subcommand runs: the subcommand's function in
``cli.py`` with the helpers it calls there, every lambda_hat module it imports, followed
through their imports, and for a sample job the module of the method's algo. Package
data that a module names (the report's ``templates``) counts too. The digest is taken
over the parsed code with docstrings dropped, so an edit to a comment, a docstring or
the layout reruns nothing, while any edit that changes what the code does reruns
exactly the jobs that run it.

Only the lambda_hat package is read: a new version of a dependency (jax, blackjax, ...)
changes no digest; ``snakemake --forcerun`` reruns what it should then.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

PACKAGE = "lambda_hat"
# A string in the code that may name a file or folder of the package.
DATA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def code_digest(
    command: str, *, algo: str | None = None, root: Path | None = None
) -> str:
    """The digest (16 hex digits) of the code that ``lambda-hat <command>`` runs.

    Args:
        command: the subcommand (``train``, ``sample``, ``aggregate``, ``report``).
        algo: for ``sample``, the method's algo; its module (``sample.ALGOS``) is added.
        root: the package directory to read; by default this package's own.

    Returns:
        The hex digest. It depends only on the code, not on file times or paths.

    Raises:
        ValueError: ``cli.py`` has no function ``cmd_<command>``.
    """
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    return _digest(command, algo, root)


def _digest(command: str, algo: str | None, root: Path) -> str:
    cli = _parse(root / "cli.py")
    functions = {
        node.name: node for node in cli.body if isinstance(node, ast.FunctionDef)
    }
    entry = f"cmd_{command}"
    if entry not in functions:
        raise ValueError(f"{root / 'cli.py'} has no subcommand function {entry}")

    used = _called_helpers(entry, functions)
    modules = {PACKAGE}  # importing any submodule runs the package's __init__
    for name in used:
        modules |= _imports(functions[name], f"{PACKAGE}.cli", root)
    if algo is not None:
        modules |= {m for m in [_algo_module(algo, root)] if m}
    modules = _import_closure(modules, root)

    h = hashlib.blake2b(digest_size=8)
    for name in sorted(used):
        h.update(f"function {name}\n{ast.dump(functions[name])}\n".encode())
    for module in sorted(modules):
        path = _module_path(module, root)
        tree = _parse(path)
        h.update(f"module {module}\n{ast.dump(tree)}\n".encode())
        for data in _data_files(tree, path.parent):
            h.update(f"data {data.relative_to(root).as_posix()}\n".encode())
            h.update(data.read_bytes())
    return h.hexdigest()


# Parsed files by path and content, docstrings dropped: several digests of one
# Snakemake run read the same modules. Callers must not change the trees.
_PARSED: dict[tuple[str, bytes], ast.Module] = {}


def _parse(path: Path) -> ast.Module:
    """The code of the file at ``path`` with its docstrings dropped.

    ``ast.dump`` of the result holds no comments and no positions, so it changes only
    when the code does.
    """
    source = path.read_bytes()
    key = (str(path), hashlib.blake2b(source, digest_size=16).digest())
    if key not in _PARSED:
        tree = ast.parse(source, filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, DOCUMENTED) and _has_docstring(node):
                node.body = node.body[1:] or [ast.Pass()]
        _PARSED[key] = tree
    return _PARSED[key]


DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _has_docstring(node: ast.AST) -> bool:
    first = node.body[0] if node.body else None
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def _called_helpers(entry: str, functions: dict[str, ast.FunctionDef]) -> set[str]:
    """``entry`` and the module-level functions of cli.py it calls, transitively."""
    used, todo = set(), [entry]
    while todo:
        name = todo.pop()
        if name in used:
            continue
        used.add(name)
        todo.extend(
            node.id
            for node in ast.walk(functions[name])
            if isinstance(node, ast.Name) and node.id in functions
        )
    return used


def _imports(tree: ast.AST, module: str, root: Path) -> set[str]:
    """The lambda_hat modules that ``tree`` (code of ``module``) imports anywhere."""
    found = set()
    package = module if _module_path(module, root).name == "__init__.py" else None
    package = package or module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            # `from pkg import name` imports the submodule pkg.name when there is one
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if _is_ours(m) and _module_path(m, root).exists()}


def _import_closure(modules: set[str], root: Path) -> set[str]:
    """``modules`` and every lambda_hat module they import, transitively."""
    done: set[str] = set()
    todo = [m for m in modules if _module_path(m, root).exists()]
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        # a submodule runs the __init__ of each package above it
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(_parse(_module_path(module, root)), module, root))
    return done


def _is_ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _module_path(module: str, root: Path) -> Path:
    """The file of a lambda_hat module (``pkg/__init__.py`` for a package)."""
    rel = Path(*module.split(".")[1:])
    package_init = root / rel / "__init__.py"
    if package_init.exists():
        return package_init
    return (root / rel).with_suffix(".py") if module != PACKAGE else package_init


def _algo_module(algo: str, root: Path) -> str | None:
    """The module that ``sample.ALGOS`` maps ``algo`` to, read without importing it."""
    for node in _parse(root / "sample.py").body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "ALGOS" for t in node.targets
        ):
            return ast.literal_eval(node.value).get(algo)
    return None


def _data_files(tree: ast.AST, directory: Path) -> list[Path]:
    """Files of the package that ``tree`` names by a string (a file or a folder)."""
    names = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    files: list[Path] = []
    for name in sorted(names):
        if not DATA_NAME.fullmatch(name):
            continue
        path = directory / name
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if _is_data(p)))
        elif path.is_file() and path.suffix != ".py":
            files.append(path)
    return files


def _is_data(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
