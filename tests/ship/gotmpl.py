"""A small Go text/template renderer for the helmfile .gotmpl files (no helmfile binary here).

It covers the subset those files use and fails loudly on anything else, so a template that uses a
construct it does not know cannot pass by accident:

- text, `{{ }}` actions with `{{-`/`-}}` trimming, `{{/* comments */}}`;
- `if`/`else`/`end`, `range [$v :=] PIPE`/`end`, `$v := PIPE`;
- operands: `.Values.x.y`, `.Environment.Name`, `.`, `$`, `$v.x`, string/raw-string/number/bool
  literals, parenthesised pipelines;
- functions (helmfile = Go builtins + sprig + its own): quote, toJson, has, printf, readFile, eq,
  ne, not, and, or, default.

Output follows Go's formatting of scalars (true/false, integers without ".0"); printing a map or
list without toJson is an error, as its Go rendering is never valid YAML.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TemplateError(Exception):
    pass


# ----------------------------------------------------------------------------------------- lexing


def _split(src: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s) parts, applying trim markers."""
    parts: list[tuple[str, str]] = []
    i = 0
    while True:
        j = src.find("{{", i)
        if j < 0:
            parts.append(("text", src[i:]))
            break
        parts.append(("text", src[i:j]))
        k = j + 2
        trim_left = src.startswith("-", k) and src[k + 1 : k + 2] in (" ", "\t", "\n")
        if trim_left:
            k += 1
        # Scan to the closing braces, skipping string and raw-string literals.
        m = k
        while True:
            if m >= len(src):
                raise TemplateError(f"unclosed action at offset {j}")
            c = src[m]
            if c == "`":
                end = src.find("`", m + 1)
                if end < 0:
                    raise TemplateError("unterminated raw string")
                m = end + 1
            elif c == '"':
                m += 1
                while src[m] != '"':
                    m += 2 if src[m] == "\\" else 1
                m += 1
            elif src.startswith("}}", m):
                break
            else:
                m += 1
        body = src[k:m]
        trim_right = body.endswith(" -") or body.endswith("\t-") or body.endswith("\n-")
        if trim_right:
            body = body[:-1]
        if trim_left and parts[-1][0] == "text":
            parts[-1] = ("text", parts[-1][1].rstrip(" \t\r\n"))
        parts.append(("action", body.strip()))
        i = m + 2
        if trim_right:
            while i < len(src) and src[i] in " \t\r\n":
                i += 1
    return parts


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<raw>`[^`]*`)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<assign>:=)
    | (?P<punct>[()|])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(s: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {s[pos:]!r} in action {s!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ---------------------------------------------------------------------------------------- parsing


@dataclass
class Node:
    kind: str  # text | out | if | range | assign
    text: str = ""
    expr: list[tuple[str, str]] = field(default_factory=list)
    var: str | None = None
    body: list[Node] = field(default_factory=list)
    orelse: list[Node] = field(default_factory=list)


def _parse(parts: list[tuple[str, str]]) -> list[Node]:
    root: list[Node] = []
    stack: list[tuple[Node | None, list[Node]]] = [(None, root)]
    for kind, s in parts:
        cur = stack[-1][1]
        if kind == "text":
            if s:
                cur.append(Node("text", text=s))
            continue
        if s.startswith("/*"):
            if not s.endswith("*/"):
                raise TemplateError(f"bad comment {s!r}")
            continue
        word = s.split(None, 1)[0] if s else ""
        rest = s[len(word) :].strip()
        if word == "if":
            n = Node("if", expr=_tokens(rest))
            cur.append(n)
            stack.append((n, n.body))
        elif word == "range":
            toks = _tokens(rest)
            var = None
            if len(toks) > 2 and toks[0][0] == "var" and toks[1][0] == "assign":
                var, toks = toks[0][1], toks[2:]
            n = Node("range", expr=toks, var=var)
            cur.append(n)
            stack.append((n, n.body))
        elif word == "else":
            owner = stack[-1][0]
            if owner is None or owner.kind != "if" or rest:
                raise TemplateError(f"unsupported else: {s!r}")
            stack[-1] = (owner, owner.orelse)
        elif word == "end":
            if len(stack) == 1:
                raise TemplateError("end without block")
            stack.pop()
        elif word in ("with", "define", "template", "block", "include", "tpl"):
            raise TemplateError(f"unsupported action {word!r}")
        else:
            toks = _tokens(s)
            if len(toks) > 2 and toks[0][0] == "var" and toks[1][0] == "assign":
                cur.append(Node("assign", var=toks[0][1], expr=toks[2:]))
            else:
                cur.append(Node("out", expr=toks))
    if len(stack) != 1:
        raise TemplateError("missing end")
    return root


# ------------------------------------------------------------------------------------- evaluation


def _go_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<no value>"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (int, float, str)):
        return str(v)
    raise TemplateError(f"printing a {type(v).__name__} without toJson: {v!r}")


def _truthy(v: Any) -> bool:
    return bool(v)


def _lookup(v: Any, path: list[str], where: str) -> Any:
    for p in path:
        if isinstance(v, dict):
            v = v.get(p)
        elif v is None:
            return None
        else:
            raise TemplateError(f"{where}: cannot take .{p} of {type(v).__name__}")
    return v


def _go_printf(fmt: str, *args: Any) -> str:
    out, ai, i = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            if verb == "%":
                out.append("%")
            elif verb in "sdv":
                out.append(_go_str(args[ai]))
                ai += 1
            elif verb == "q":
                out.append(json.dumps(str(args[ai])))
                ai += 1
            else:
                raise TemplateError(f"printf verb %{verb} unsupported")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _go_json(v: Any) -> str:
    """encoding/json.Marshal: UTF-8 kept, HTML-sensitive characters escaped."""
    out = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    for c, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        out = out.replace(c, esc)
    return out


class Renderer:
    def __init__(self, base_dir: Path):
        # helmfile resolves readFile relative to the directory of the state being processed.
        self.base_dir = base_dir
        self.funcs = {
            "quote": lambda *a: " ".join(json.dumps(_go_str(x)) for x in a),
            "toJson": _go_json,
            "has": lambda needle, hay: needle in (hay or []),
            "printf": _go_printf,
            "readFile": lambda p: (self.base_dir / p).read_text(),
            "eq": lambda a, *b: any(a == x for x in b),
            "ne": lambda a, b: a != b,
            "not": lambda a: not _truthy(a),
            "and": lambda *a: next((x for x in a if not _truthy(x)), a[-1]),
            "or": lambda *a: next((x for x in a if _truthy(x)), a[-1]),
            "default": lambda d, v=None: v if _truthy(v) else d,
        }

    def render(self, src: str, data: dict[str, Any]) -> str:
        nodes = _parse(_split(src))
        out: list[str] = []
        self._exec(nodes, data, {"$": data}, out)
        return "".join(out)

    def _exec(self, nodes: list[Node], dot: Any, vars_: dict[str, Any], out: list[str]) -> None:
        for n in nodes:
            if n.kind == "text":
                out.append(n.text)
            elif n.kind == "out":
                out.append(_go_str(self._pipeline(n.expr, dot, vars_)))
            elif n.kind == "assign":
                assert n.var is not None
                vars_[n.var] = self._pipeline(n.expr, dot, vars_)
            elif n.kind == "if":
                branch = n.body if _truthy(self._pipeline(n.expr, dot, vars_)) else n.orelse
                self._exec(branch, dot, dict(vars_), out)
            elif n.kind == "range":
                seq = self._pipeline(n.expr, dot, vars_)
                items = list(seq.values()) if isinstance(seq, dict) else list(seq or [])
                for item in items:
                    inner = dict(vars_)
                    if n.var:
                        inner[n.var] = item
                    self._exec(n.body, item, inner, out)

    def _pipeline(self, toks: list[tuple[str, str]], dot: Any, vars_: dict[str, Any]) -> Any:
        # Split on top-level pipes.
        cmds: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for t in toks:
            if t == ("punct", "("):
                depth += 1
            elif t == ("punct", ")"):
                depth -= 1
            if t == ("punct", "|") and depth == 0:
                cmds.append([])
            else:
                cmds[-1].append(t)
        value: Any = _NOTHING
        for cmd in cmds:
            value = self._command(cmd, dot, vars_, value)
        return value

    def _command(self, toks: list[tuple[str, str]], dot: Any, vars_: dict[str, Any], piped: Any) -> Any:
        if not toks:
            raise TemplateError("empty command")
        args: list[Any] = []
        i = 0
        fn = None
        if toks[0][0] == "ident" and toks[0][1] not in ("true", "false", "nil"):
            fn = toks[0][1]
            if fn not in self.funcs:
                raise TemplateError(f"function {fn!r} is not supported by the test renderer")
            i = 1
        while i < len(toks):
            kind, s = toks[i]
            if (kind, s) == ("punct", "("):
                depth, j = 1, i + 1
                while depth:
                    if toks[j] == ("punct", "("):
                        depth += 1
                    elif toks[j] == ("punct", ")"):
                        depth -= 1
                    j += 1
                args.append(self._pipeline(toks[i + 1 : j - 1], dot, vars_))
                i = j
                continue
            args.append(self._operand(kind, s, dot, vars_))
            i += 1
        if piped is not _NOTHING:
            args.append(piped)
        if fn is None:
            if len(args) != 1:
                raise TemplateError(f"operand list without a function: {toks!r}")
            return args[0]
        return self.funcs[fn](*args)

    def _operand(self, kind: str, s: str, dot: Any, vars_: dict[str, Any]) -> Any:
        if kind == "raw":
            return s[1:-1]
        if kind == "str":
            return json.loads(s)
        if kind == "num":
            return float(s) if "." in s else int(s)
        if kind == "ident":
            return {"true": True, "false": False, "nil": None}[s]
        if kind == "field":
            return dot if s == "." else _lookup(dot, s[1:].split("."), s)
        if kind == "var":
            name, *path = s.split(".")
            if name not in vars_:
                raise TemplateError(f"undefined variable {name}")
            return _lookup(vars_[name], path, s)
        raise TemplateError(f"unexpected token {s!r}")


class _Nothing:
    pass


_NOTHING = _Nothing()


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """helmfile's merge of environment values: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out
