#!/usr/bin/env bash
# test_docs_links.sh - every relative link (and #anchor) and every cited repository file in README.md and
# docs/*.md exists (tests/cli/check_docs_links.py); the checker itself reports a dead link, a dead
# anchor, a cited document and a cited source file that do not exist; and the README's dependency table
# names exactly the packages of each group of scripts/setup.sh, in that group. Needs no build.
source "$(dirname "$0")/../lib.sh" cli docs_
CHECK=$ROOT/tests/cli/check_docs_links.py

# the repository's documents
docs=(README.md)
for f in "$ROOT"/docs/*.md; do docs+=("docs/${f##*/}"); done
if "$PY" "$CHECK" "$ROOT" "${docs[@]}" >"$T/repo.out" 2>&1; then
  pass links
else
  fail links "dead links or cited files that do not exist in README.md or docs/*.md"; show "$T/repo.out" 20
fi

# the README's dependency table against scripts/setup.sh --list GROUP: rows "| pkg, pkg (note) | group | ... |"
sed -n '/^### Dependencies/,/^### /p' "$ROOT/README.md" |
  awk -F'|' 'NF > 3 && $3 ~ /^ *(run|test) *$/ { gsub(/ /, "", $3); n = split($2, p, ","); for (i = 1; i <= n; i++) {
               sub(/^ +/, "", p[i]); sub(/ .*/, "", p[i]); print p[i], $3 } }' | sort >"$T/table"
for g in run test; do bash "$ROOT/scripts/setup.sh" --list $g | sed "s/\$/ $g/"; done | sort >"$T/setup"
if [ -s "$T/setup" ] && diff "$T/setup" "$T/table" >"$T/deps.diff"; then
  pass dependency_table
else
  fail dependency_table "README's dependency table differs from scripts/setup.sh --list (< setup.sh, > README)"
  show "$T/deps.diff" 20
fi

# the checker fails on each kind of dead reference (a fake repository in $T/r)
mkdir -p "$T/r/docs" "$T/r/src/core"
: >"$T/r/src/core/status.c"
cat >"$T/r/docs/good.md" <<'MD'
# Good page
## A section (with `code`)
See [the other page](other.md#a-section-with-code), [here](#good-page), `src/core/status.c`, `status.c`,
![a figure](other.md) and [a site](https://example.org/x.md).
MD
cp "$T/r/docs/good.md" "$T/r/docs/other.md"
"$PY" "$CHECK" "$T/r" docs/good.md >"$T/good.out" 2>&1 && pass checker_accepts || {
  fail checker_accepts "a page whose links all resolve was refused"; show "$T/good.out"; }
n=0
for bad in "[x](missing.md)" "[x](other.md#no-such-heading)" "[x](#nowhere)" "\`DESIGN.md\`" \
           "\`/elsewhere/notes/scale.md\`" "\`src/core/gone.c\`" "\`gone.h\`" "![fig](gone.png)"; do
  n=$((n + 1))
  printf '# Bad page\n\ntext %s text\n' "$bad" >"$T/r/docs/bad$n.md"
  if "$PY" "$CHECK" "$T/r" "docs/bad$n.md" >"$T/bad$n.out" 2>&1; then
    fail "checker_refuses_$n" "the dead reference $bad was not reported"
  elif ! grep -q "^docs/bad$n.md:3: " "$T/bad$n.out"; then
    fail "checker_refuses_$n" "$bad: the report does not name docs/bad$n.md:3"; show "$T/bad$n.out"
  else
    pass "checker_refuses_$n"
  fi
done
finish
