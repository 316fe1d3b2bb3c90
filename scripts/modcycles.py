#!/usr/bin/env python3
"""Import cycles between the top-level modules of the gateway crate.

Reads gateway/src/**/*.rs, maps each file to its top-level module (`src/foo.rs` and
`src/foo/**` are `foo`), collects the `crate::NAME` references between modules (in `use`
items, `use crate::{a, b::c}` groups and paths alike; comments and string literals do not
count), and prints every strongly connected component of more than one module (Tarjan)
with its members and the edges inside it, then the number of edges.

    scripts/modcycles.py [--src DIR] [--skip-tests] [--edges] [--only a,b,c]

--skip-tests leaves out items under `#[cfg(test)]`; --edges lists every edge; --only keeps
the named modules and the edges between them (cycles through other modules then vanish).
Exits 1 when there is a cycle, so it can guard a change.
"""

import argparse
import os
import re
import signal
import sys


def strip(text):
    """The source with comments and string/char literals blanked (lengths kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c == "/" and nxt == "*":
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 258]) and not _ident_before(text, i):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "b" and nxt == "r" and re.match(r'br#*"', text[i:i + 259]) and not _ident_before(text, i):
            out.append(" ")
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}'), else a lifetime or label.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'\n])'", text[i:i + 16])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ident_before(text, i):
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")


def drop_cfg_test(code):
    """Removes items under `#[cfg(test)]` (the attribute up to the end of its item)."""
    out, i = [], 0
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", code):
        if m.start() < i:
            continue
        out.append(code[i:m.start()])
        j, depth = m.end(), 0
        while j < len(code):
            ch = code[j]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            elif ch == ";" and depth == 0:
                j += 1
                break
            j += 1
        i = j
    out.append(code[i:])
    return "".join(out)


IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def group_heads(code, start):
    """The first name of each entry of the `{...}` group opening at `start`."""
    names, depth, j, entry_start = [], 0, start, start + 1
    while j < len(code):
        ch = code[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                names.append(code[entry_start:j])
                break
        elif ch == "," and depth == 1:
            names.append(code[entry_start:j])
            entry_start = j + 1
        j += 1
    heads = []
    for entry in names:
        m = re.match(r"\s*(" + IDENT + ")", entry)
        if m:
            heads.append(m.group(1))
    return heads


def references(code):
    """Top-level names referred to as `crate::NAME` (or inside `crate::{...}`)."""
    found = []
    for m in re.finditer(r"(?<![A-Za-z0-9_$])crate\s*::\s*(\{|" + IDENT + ")", code):
        if m.group(1) == "{":
            found.extend(group_heads(code, m.start(1)))
        else:
            found.append(m.group(1))
    return found


def module_of(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def graph(src, skip_tests):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files.setdefault(module_of(src, path), []).append(path)
    modules = set(files) - {"lib", "main"}
    edges = {}
    for mod, paths in files.items():
        for path in paths:
            with open(path, encoding="utf-8") as f:
                code = strip(f.read())
            if skip_tests:
                code = drop_cfg_test(code)
            for name in references(code):
                if name in modules and name != mod:
                    edges.setdefault(mod, {}).setdefault(name, 0)
                    edges[mod][name] += 1
    return sorted(set(files)), edges


def tarjan(nodes, edges):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, {})):
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
            out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    # Piped into `head`, stop quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default=os.path.join(here, "..", "gateway", "src"))
    p.add_argument("--skip-tests", action="store_true", help="ignore #[cfg(test)] items")
    p.add_argument("--edges", action="store_true", help="list every edge")
    p.add_argument("--only", help="comma-separated modules: the graph among them alone")
    args = p.parse_args()
    nodes, edges = graph(os.path.normpath(args.src), args.skip_tests)
    if args.only:
        keep = set(args.only.split(","))
        nodes = [v for v in nodes if v in keep]
        edges = {
            a: {b: r for b, r in t.items() if b in keep}
            for a, t in edges.items()
            if a in keep
        }
    count = sum(len(t) for t in edges.values())
    cycles = [c for c in tarjan(nodes, edges) if len(c) > 1]
    cycles.sort(key=lambda c: (-len(c), c))
    for i, comp in enumerate(cycles, 1):
        members = set(comp)
        print(f"cycle {i} ({len(comp)} modules): {{{', '.join(comp)}}}")
        for a in comp:
            for b, refs in sorted(edges.get(a, {}).items()):
                if b in members:
                    print(f"  {a} -> {b} ({refs})")
    if not cycles:
        print("no cycles")
    if args.edges:
        for a in sorted(edges):
            for b, refs in sorted(edges[a].items()):
                print(f"edge {a} -> {b} ({refs})")
    print(f"{len(nodes)} modules, {count} edges")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
