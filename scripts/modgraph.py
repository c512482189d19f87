#!/usr/bin/env python3
"""Module dependency graph of a crate's src/ (code only, comments ignored): edges
`a -> b` when a's code names `crate::b` (in `use` or inline), and the cycles (strongly
connected components with more than one module)."""
import re, sys, pathlib
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "userlib/discount/src")
def mod_of(p):
    rel = p.relative_to(src).with_suffix("")
    parts = [x for x in rel.parts if x != "mod"]
    return parts[0] if parts and parts[0] != "lib" else "lib"   # top-level module
g = {}
for p in sorted(src.rglob("*.rs")):
    m = mod_of(p)
    code = "\n".join(l.split("//")[0] for l in p.read_text().splitlines())
    deps = set(re.findall(r"crate::([a-z_]+)", code))
    for grp in re.findall(r"use crate::\{([^}]*)\}", code):
        deps |= {d.strip().split("::")[0] for d in grp.split(",") if d.strip()}
    g.setdefault(m, set()).update(d for d in deps if d != m and (src / f"{d}.rs").exists() or (src / d).is_dir())
    g[m].discard(m)
for m in sorted(g):
    print(f"{m:10} -> {' '.join(sorted(g[m]))}")
# Tarjan SCC
idx, low, on, st, out, n = {}, {}, set(), [], [], [0]
def sc(v):
    idx[v] = low[v] = n[0]; n[0] += 1; st.append(v); on.add(v)
    for w in g.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        c = []
        while True:
            w = st.pop(); on.discard(w); c.append(w)
            if w == v: break
        if len(c) > 1: out.append(sorted(c))
sys.setrecursionlimit(10000)
for v in list(g): 
    if v not in idx: sc(v)
print("cycles:", out if out else "none")
