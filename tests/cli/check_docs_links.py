#!/usr/bin/python3
"""check_docs_links.py - the links and cited files of Markdown documents must exist.

Usage: check_docs_links.py ROOT FILE.md...

For every FILE (a path relative to ROOT, or absolute):
  - a Markdown link or image [text](target) that is not a URL must name an existing file or directory,
    relative to FILE's folder; a #anchor (alone, or after a .md target) must be a heading of that document
    (GitHub's slugs);
  - a code span that is a single path-like token must exist when it
      * starts with a top-level folder of the repository (src/, docs/, tests/, ...): relative to ROOT
        (a test binary such as tests/nn/test_bf16 by its source tests/nn/test_bf16.c),
      * ends in .md (a cited document): relative to ROOT, FILE's folder or docs/,
      * is a bare C, shell or Python file name (unet.c, build.h): somewhere under ROOT.
Prints one line per dead reference ("FILE:LINE: what") and exits 1 if there is any, else 0."""
import os
import re
import sys

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"(`+)(.+?)\1")
TOKEN = re.compile(r"^[A-Za-z0-9_.\-/]+$")
SOURCE = re.compile(r"^[A-Za-z0-9_\-]+\.(c|h|sh|py)$")
SKIP_DIRS = {".git", "build", "runs"}


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = re.sub(r"`", "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, out, fence = {}, set(), False
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("```"):
                    fence = not fence
                m = None if fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
                if m:
                    base = slug(m.group(1))
                    n = seen.get(base, 0)
                    seen[base] = n + 1
                    out.add(base if n == 0 else "%s-%d" % (base, n))
        cache[path] = out
    return cache[path]


def source_names(root):
    names = set()
    for d, subdirs, files in os.walk(root):
        subdirs[:] = [s for s in subdirs if s not in SKIP_DIRS]
        names.update(files)
    return names


def check(root, path, top, names):
    bad = []
    folder = os.path.dirname(path)
    fence = False
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for no, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        for m in LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(folder, file)) if file else path
            if not os.path.exists(dest):
                bad.append("%d: link to %s: no such file" % (no, target))
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                bad.append("%d: link to %s: no heading with the anchor #%s in %s"
                           % (no, target, anchor, os.path.relpath(dest, root)))
        for m in CODE.finditer(LINK.sub("", line)):
            tok = m.group(2).strip()
            if not TOKEN.match(tok):
                continue
            first = tok.split("/", 1)[0]
            if "/" in tok and first in top:
                if not any(os.path.exists(os.path.join(root, tok + ext)) for ext in ("", ".c")):
                    bad.append("%d: cites %s: no such file in the repository" % (no, tok))
            elif tok.endswith(".md"):
                where = [os.path.join(root, tok.lstrip("/")), os.path.join(folder, tok),
                         os.path.join(root, "docs", tok)]
                if tok.startswith("/") or not any(os.path.exists(w) for w in where):
                    bad.append("%d: cites the document %s, which is not in the repository" % (no, tok))
            elif SOURCE.match(tok) and tok not in names:
                bad.append("%d: cites %s: no file of that name in the repository" % (no, tok))
    return ["%s:%s" % (os.path.relpath(path, root), b) for b in bad]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    root = os.path.abspath(sys.argv[1])
    top = {e for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)) and e not in SKIP_DIRS}
    names = source_names(root)
    bad = []
    for p in sys.argv[2:]:
        bad += check(root, os.path.abspath(os.path.join(root, p)), top, names)
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
