#!/usr/bin/env python3
"""Lists import cycles between the modules of a crate's src/ folder.

A module is a file (`a.rs`, `a/mod.rs`). Module A depends on module B when A names an
item of B (`use crate::b::X`, `super::b::X`, `crate::b::X` in code). A child naming its
ancestor (`super::FieldError`) is how Rust modules share their parent's items and is not
counted; a parent re-exporting a child (`pub use child::X`) is. A cycle is a strongly
connected set of two or more modules. Exits 1 when there is one.

    scripts/module-cycles.py gateway/src plugins/src healthcheck/src outbound/src
"""

import os
import re
import sys

REF = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
PUB_USE_CHILD = re.compile(r"^\s*pub(?:\([^)]*\))?\s+use\s+(?:self::)?([a-z_][a-z0-9_]*)::", re.M)


def module_path(root, file):
    rel = os.path.relpath(file, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def strip_tests(text):
    # `#[cfg(test)] mod tests { ... }` bodies and `#[cfg(test)] mod x;` are test-only.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return re.sub(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*;", "", "".join(out))


def resolve(modules, base, segs):
    """The longest existing module named by a path's prefix."""
    best = None
    for n in range(len(segs) + 1):
        cand = base + tuple(segs[:n])
        if cand in modules:
            best = cand
    return best


def graph(root):
    modules, texts = {}, {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                modules[module_path(root, path)] = path
    for m, path in modules.items():
        with open(path, encoding="utf-8") as fh:
            texts[m] = strip_tests(strip_comments(fh.read()))
    edges = {m: set() for m in modules}
    for m, text in texts.items():
        is_dir_mod = os.path.basename(modules[m]) in ("mod.rs", "lib.rs", "main.rs")
        here = m if is_dir_mod else m[:-1]  # the module whose children `self::x` names

        def add(kind, segs):
            if kind == "crate":
                base = ()
            elif kind == "self":
                base = m
            else:  # super
                base = m[:-1]
                segs = list(segs)
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
            target = resolve(modules, base, list(segs))
            if target is None or target == m:
                return
            if m[: len(target)] == target:
                return  # an ancestor: not a dependency edge
            edges[m].add(target)

        for g in USE_GROUP.finditer(text):
            prefix = [s for s in g.group(2).split("::") if s]
            for item in g.group(3).split(","):
                item = item.strip().split(" as ")[0]
                segs = prefix + [s for s in re.split(r"::|\{|\}", item) if s.strip()]
                add(g.group(1), [s.strip() for s in segs])
        for r in REF.finditer(text):
            add(r.group(1), [s for s in r.group(2).split("::") if s])
        # A module naming its own child by a bare path (`params::prepare(..)`,
        # `use params::X`) depends on it, as does one re-exporting it.
        for c in set(MOD_DECL.findall(text)):
            child = here + (c,)
            if child in modules and child != m and re.search(r"\b" + c + r"::", text):
                edges[m].add(child)
        for c in PUB_USE_CHILD.findall(text):
            child = here + (c,)
            if child in modules and child != m:
                edges[m].add(child)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    found = False
    for root in sys.argv[1:] or ["gateway/src", "plugins/src", "healthcheck/src", "outbound/src"]:
        for comp in cycles(graph(root)):
            found = True
            names = ["::".join(c) or "(crate root)" for c in comp]
            print(f"{root}: cycle between {', '.join(names)}")
    if not found:
        print("no module cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
