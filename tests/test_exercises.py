"""The notebooks' exercise solutions use only the public API, and every name they use exists (issue 18).

Each notebook's "## Summary" cell ends with "## Exercises" and a hidden `<details><summary>Solutions</summary>`
block of Python. These tests read that block with `ast` and run nothing but imports and `inspect`:

* every `import X` / `from X import Y` resolves, and neither X's parts nor Y start with "_";
* every attribute read on an imported module or object (`tables.single_seed_claim`, `V.TOKENIZERS`,
  `vavae_lab.launch`) and every method called on a known instance (`study.generation`, bound in the notebook's
  own cells as `study = Study(PRESET)`) exists, and no name or attribute is private ("_x"; a lone "_" is fine);
* every call to something resolved that way binds to its signature (keyword names, positional count);
* every name the solution reads is defined by it, by the notebook's cells above the Summary, or is a builtin;
* every config override string ("tokenizer.train.steps=2400") applies to a preset.

Nothing trains; the whole file runs in a few seconds.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import importlib
import inspect
import json
import re
import sys
import types
from functools import lru_cache
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = re.compile(r"<details><summary>Solutions</summary>\s*```python\n(.*?)```", re.S)
KERNEL_NAMES = {"display", "get_ipython"}  # what IPython defines in every kernel
OVERRIDE = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+)=")


@dataclasses.dataclass(frozen=True)
class Instance:
    """A name bound to `cls(...)` (e.g. `study = Study(PRESET)`): its methods can be checked."""

    cls: type


@dataclasses.dataclass(frozen=True)
class Method:
    """`instance.name`, resolved on the instance's class."""

    cls: type
    name: str


def _is_private(name: str) -> bool:
    return name.startswith("_") and name != "_" and not (name.startswith("__") and name.endswith("__"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def notebook_parts(path: Path) -> tuple[str, str]:
    """(the code of the cells above the Summary cell, the solution block of the Summary cell)."""
    cells = _cells(path)
    summary = [i for i, c in enumerate(cells)
               if c["cell_type"] == "markdown" and _source(c).lstrip().startswith("## Summary")]
    assert len(summary) == 1, f"{path.name}: expected one '## Summary' markdown cell, found {len(summary)}"
    text = _source(cells[summary[0]])
    assert "## Exercises" in text, f"{path.name}: the Summary cell has no '## Exercises'"
    blocks = SOLUTIONS.findall(text)
    assert len(blocks) == 1, f"{path.name}: expected one <details><summary>Solutions</summary> python block"
    code = [_source(c) for c in cells[:summary[0]] if c["cell_type"] == "code"]
    # IPython magics and shell escapes are not Python
    code = ["\n".join(line for line in c.splitlines() if not line.lstrip().startswith(("%", "!"))) for c in code]
    return "\n\n".join(code), blocks[0]


def _import_module(name: str, eager: bool = True):
    """The module, or None when it cannot be imported (or, not eager, is a third-party one not imported yet:
    the notebooks' `import timm, sklearn, torch_fidelity` would cost seconds and is not what is checked)."""
    if not eager and name.split(".")[0] != "vavae_lab" and name not in sys.modules:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _attribute(obj, name: str):
    """getattr, and for a package also its submodule `name` (not yet imported); raises AttributeError."""
    if hasattr(obj, name):
        return getattr(obj, name)
    if isinstance(obj, types.ModuleType):
        sub = _import_module(f"{obj.__name__}.{name}")
        if sub is not None:
            return sub
    raise AttributeError(name)


def _instance_has(cls: type, name: str) -> bool:
    """A class attribute, a dataclass field, or an attribute its own code sets as self.<name>."""
    if hasattr(cls, name):
        return True
    if dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}:
        return True
    for klass in cls.__mro__:
        try:
            if re.search(rf"^\s*(?:[\w.]+\s*,\s*)*self\.{re.escape(name)}\s*(?::[^=\n]+)?(?:,\s*[\w.]+\s*)*=(?!=)",
                         inspect.getsource(klass), re.M):
                return True
        except (OSError, TypeError):
            continue
    return False


@lru_cache(maxsize=None)
def _smoke_config():
    from vavae_lab import load_config

    return load_config("smoke")


class Checker:
    """Walks a notebook's cells (to learn its names) and then its solution (to check them)."""

    def __init__(self):
        self.env: dict[str, object] = {}  # name -> module, object, Instance, or None (bound, type unknown)
        self.errors: list[str] = []

    # -- resolving ----------------------------------------------------------------------------------------
    def resolve(self, node):
        """What an expression names, when it is a known name or an attribute chain on one; else None."""
        if isinstance(node, ast.Name):
            return self.env.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is None or isinstance(base, Method):
                return None
            if isinstance(base, Instance):
                return Method(base.cls, node.attr) if hasattr(base.cls, node.attr) else None
            try:
                return _attribute(base, node.attr)
            except AttributeError:
                return None
        return None

    def bind(self, tree: ast.AST, *, check: bool):
        """Record the names a piece of code binds (imports, `x = Class(...)`, any other store)."""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    module = self._module(alias.name, node, check)
                    if alias.asname:
                        self.env[alias.asname] = module
                    else:
                        self.env[alias.name.split(".")[0]] = _import_module(alias.name.split(".")[0], check)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if check:
                        self.errors.append(f"line {node.lineno}: relative import (from {'.' * node.level}...)")
                    continue
                module = self._module(node.module, node, check)
                for alias in node.names:
                    if alias.name == "*":
                        if check:
                            self.errors.append(f"line {node.lineno}: 'from {node.module} import *'")
                        continue
                    value = None
                    if check and _is_private(alias.name):
                        self.errors.append(f"line {node.lineno}: private name {alias.name!r} imported from "
                                           f"{node.module}")
                    if module is not None:
                        try:
                            value = _attribute(module, alias.name)
                        except AttributeError:
                            if check:
                                self.errors.append(f"line {node.lineno}: {node.module} has no {alias.name!r}")
                    self.env[alias.asname or alias.name] = value
            elif isinstance(node, ast.Assign):
                value = None
                if isinstance(node.value, ast.Call):
                    func = self.resolve(node.value.func)
                    if inspect.isclass(func):
                        value = Instance(func)
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.env[target.id] = value
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.env.setdefault(node.name, None)
            elif isinstance(node, ast.arg):
                self.env.setdefault(node.arg, None)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.env.setdefault(node.id, None)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.env.setdefault(node.name, None)

    def _module(self, name: str, node: ast.AST, check: bool):
        module = _import_module(name, eager=check)
        if check:
            if module is None:
                self.errors.append(f"line {node.lineno}: cannot import {name}")
            private = [p for p in name.split(".") if _is_private(p)]
            if private:
                self.errors.append(f"line {node.lineno}: private module {name}")
        return module

    # -- checking -----------------------------------------------------------------------------------------
    def check(self, code: str) -> list[str]:
        tree = ast.parse(code)
        # the literal parts of an f-string are checked with the f-string, not as whole strings
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        known = set(self.env)
        self.bind(tree, check=True)
        defined = known | set(self.env) | set(dir(builtins)) | KERNEL_NAMES
        for node in ast.walk(tree):
            where = f"line {getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.alias) and node.asname and _is_private(node.asname):
                self.errors.append(f"line {node.lineno}: private name {node.asname!r}")
            elif isinstance(node, ast.Name):
                if _is_private(node.id):
                    self.errors.append(f"{where}: private name {node.id!r}")
                elif isinstance(node.ctx, ast.Load) and node.id not in defined:
                    self.errors.append(f"{where}: {node.id!r} is defined neither by the solution nor by the notebook")
            elif isinstance(node, ast.Attribute):
                self._check_attribute(node, where)
            elif isinstance(node, ast.Call):
                self._check_call(node, where)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
                self._check_override(node.value, where, full=True)
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                self._check_override(str(node.values[0].value), where, full=False)
        return self.errors

    def _check_attribute(self, node: ast.Attribute, where: str):
        if _is_private(node.attr):
            self.errors.append(f"{where}: private attribute .{node.attr}")
            return
        base = self.resolve(node.value)
        if base is None or isinstance(base, Method):
            return
        if isinstance(base, Instance):
            if not _instance_has(base.cls, node.attr):
                self.errors.append(f"{where}: {base.cls.__name__} has no {node.attr!r}")
            return
        try:
            _attribute(base, node.attr)
        except AttributeError:
            self.errors.append(f"{where}: {getattr(base, '__name__', type(base).__name__)} has no {node.attr!r}")

    def _check_call(self, node: ast.Call, where: str):
        func = self.resolve(node.func)
        if isinstance(func, Instance):
            return  # calling an object (a torch module's forward): its class decides
        if (func is None or any(isinstance(a, ast.Starred) for a in node.args)
                or any(k.arg is None for k in node.keywords)):
            return  # unknown callee, or *args / **kwargs: the arguments cannot be counted
        args = [object()] * len(node.args)
        kwargs = {k.arg: object() for k in node.keywords}
        try:
            if isinstance(func, Method):
                target = inspect.getattr_static(func.cls, func.name)
                if isinstance(target, staticmethod):
                    sig = inspect.signature(target.__func__)
                elif isinstance(target, classmethod):
                    sig = inspect.signature(getattr(func.cls, func.name))
                else:
                    sig, args = inspect.signature(target), [object(), *args]
                name = f"{func.cls.__name__}.{func.name}"
            elif callable(func):
                sig, name = inspect.signature(func), getattr(func, "__qualname__", repr(func))
            else:
                self.errors.append(f"{where}: {ast.unparse(node.func)} is not callable")
                return
        except (TypeError, ValueError):
            return  # a builtin without a signature
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            self.errors.append(f"{where}: {ast.unparse(node)[:80]} does not fit {name}{sig}: {exc}")

    def _check_override(self, text: str, where: str, *, full: bool):
        match = OVERRIDE.match(text)
        if not match:
            return
        from vavae_lab.config import apply_overrides

        node = _smoke_config()
        for part in match.group(1).split("."):
            if not hasattr(node, part):
                self.errors.append(f"{where}: override {text!r}: the config has no {match.group(1)!r}")
                return
            node = getattr(node, part)
        if full:
            try:
                apply_overrides(_smoke_config(), [text])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                self.errors.append(f"{where}: override {text!r} does not apply: {exc}")


def check_solution(setup: str, solution: str) -> list[str]:
    """Problems of `solution` run after the notebook code `setup` (an empty list when there are none)."""
    checker = Checker()
    checker.bind(ast.parse(setup), check=False)
    return checker.check(solution)


def test_every_notebook_has_exercises():
    assert len(NOTEBOOKS) >= 7, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_notebook_ships_a_placeholder(path):
    cells = json.loads(path.read_text())["cells"]
    marked = [c.get("id") for c in cells if any(m in "".join(c["source"]) for m in ("PENDING", "TODO", "FIXME"))]
    assert not marked, f"{path.name}: cells {marked} still carry a placeholder"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_solutions_use_the_public_api(path):
    setup, solution = notebook_parts(path)
    errors = check_solution(setup, solution)
    assert not errors, f"{path.name} solutions:\n" + "\n".join(errors) + "\n--- solution ---\n" + solution


SETUP = """
import os
import vavae_lab
from vavae_lab.study import Study
from vavae_lab.study import tables, variants as V
from vavae_lab.presets import env_preset
PRESET = env_preset()
study = Study(PRESET)
"""


@pytest.mark.parametrize("solution, finding", [
    ("from vavae_lab.study.variants import _tok", "private name '_tok'"),
    ("from vavae_lab.study.runner import Study as _S", "private name '_S'"),
    ("print(tables._ablation)", "private attribute ._ablation"),
    ("print(study._dirs)", "private attribute ._dirs"),
    ("import vavae_lab._nothing", "private module"),
    ("tables.no_such_table(study)", "has no 'no_such_table'"),
    ("from vavae_lab.study.tables import no_such_table", "has no 'no_such_table'"),
    ("import vavae_lab.no_such_module", "cannot import"),
    ("study.no_such_method('d4')", "Study has no 'no_such_method'"),
    ("print(V.NO_SUCH_LIST)", "has no 'NO_SUCH_LIST'"),
    ("plot_nowhere(study)", "'plot_nowhere' is defined neither"),
    ("from vavae_lab.metrics.generation import evaluate_samples\nevaluate_samples(1, refrence='shapes')",
     "does not fit"),
    ("study.recon('d4', n=3)", "does not fit Study.recon"),
    ("x = Study(PRESET, [], 'cpu')", "does not fit"),
    ("vavae_lab.launch('train-dit', 'lab', dry_run=True).shell_commands()", None),  # not resolvable: no finding
    ("study.generation('d4', 'dit.model.qk_nrom=true')", "the config has no 'dit.model.qk_nrom'"),
    ("study.generation('d4', 'sample.steps=many')", "does not apply"),
    ("study.generation('d4', f'dit.modle.qk_norm={True}')", "the config has no"),
])
def test_the_checker_finds(solution, finding):
    errors = check_solution(SETUP, solution)
    if finding is None:
        assert not errors
    else:
        assert any(finding in e for e in errors), errors


def test_the_checker_passes_public_code():
    ok = """
from vavae_lab.study.variants import TokenizerVariant
from vavae_lab.analysis.uniformity import uniformity_metrics
heavy = Study(PRESET, ['tokenizer.vf.weight=0.5'])
_, hist = heavy.tokenizer('d32_vf')
print(heavy.generation('d32_vf', 'sample.steps=10', n=100)['fid'], study.seeds, tables.single_seed_claim)
print([uniformity_metrics(x, n=10, runs=2, perplexity=5) for x in ()], vavae_lab.launch, V.TOKENIZERS['d4'].label)
"""
    assert check_solution(SETUP, ok) == []
