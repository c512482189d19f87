#!/usr/bin/env python3
"""Module dependency graph of a crate's src/ (code only: comments and string literals are
stripped): an edge `a -> b` when a's code names `crate::b`, inline or in a `use
crate::{...}` group (nested groups included), for the crate's top-level modules; then the
cycles (strongly connected components of more than one module).

    scripts/modgraph.py [SRC]            # default userlib/discount/src
    scripts/modgraph.py SRC --check      # only the verdict; exit 1 if there is a cycle

make lint runs the check on userlib/discount/src (issue 13: one owner for the runtime, no
import cycle). The tree before dadc0c8 is the negative control: it has a cycle of ten
modules (alloc, ckpt, image, intercept, kstate, layout, protocol, signals, trace, vol)."""
import pathlib
import re
import sys

args = [a for a in sys.argv[1:] if a != "--check"]
check = "--check" in sys.argv[1:]
src = pathlib.Path(args[0] if args else "userlib/discount/src")
if not src.is_dir():
    sys.exit(f"modgraph: {src} is not a directory")
mods = {p.stem for p in src.glob("*.rs")} | {p.name for p in src.iterdir() if p.is_dir()}
mods.discard("lib")


def top(p):
    """The top-level module a file belongs to ("lib" for the crate root)."""
    r = p.relative_to(src).parts
    return "lib" if r[0] == "lib.rs" else r[0].removesuffix(".rs")


def strip(t):
    """Code without comments and with string literals emptied."""
    t = re.sub(r"/\*.*?\*/", "", t, flags=re.S)
    t = re.sub(r'"(\\.|[^"\\])*"', '""', t)
    return "\n".join(line.split("//")[0] for line in t.splitlines())


def names(group):
    """The first path segment of each item at depth 0 of a brace group's text."""
    out, depth, cur = [], 0, ""
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if depth == 0 and ch == ",":
            out.append(cur)
            cur = ""
        elif depth == 0:
            cur += ch
    out.append(cur)
    return {re.split(r"::|\s", x.strip())[0] for x in out if x.strip()}


g = {}
for p in sorted(src.rglob("*.rs")):
    m, code = top(p), strip(p.read_text())
    deps = set(re.findall(r"crate::([A-Za-z_]\w*)", code))
    for start in (x.end() for x in re.finditer(r"crate::\{", code)):
        depth, j = 1, start
        while depth and j < len(code):
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        deps |= names(code[start : j - 1])
    g.setdefault(m, set()).update(d for d in deps if d in mods and d != m)

# Tarjan's strongly connected components.
idx, low, on, stack, cycles, n = {}, {}, set(), [], [], [0]


def scc(v):
    idx[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in g.get(v, ()):
        if w not in idx:
            scc(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = stack.pop()
            on.discard(w)
            c.append(w)
            if w == v:
                break
        if len(c) > 1:
            cycles.append(sorted(c))


sys.setrecursionlimit(10000)
for v in sorted(g):
    if v not in idx:
        scc(v)
if not check:
    for m in sorted(g):
        print(f"{m:10} -> {' '.join(sorted(g[m]))}")
print(f"{src}: {sum(len(s) for s in g.values())} edges, cycles: {cycles if cycles else 'none'}")
sys.exit(1 if cycles else 0)
