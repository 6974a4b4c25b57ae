/* config.c - load the typed configuration from YAML (libyaml document API),
 * apply --set overrides, and write it back as YAML. Every key's type, place
 * and range come from the table in config_schema.c.
 *
 * Type rules (file, --set and table defaults alike):
 *   int    plain scalar [-+]digits
 *   float  plain scalar decimal or exponent form (1e-3, .5, 2); no inf/nan
 *   bool   plain true/false (True, TRUE, False, FALSE)
 *   string any scalar (quoted or not); a --set string takes the text verbatim
 *   enum   a scalar spelled exactly as one of the names
 *   list   a sequence (block or flow) of scalars of the element type;
 *          a single scalar counts as a one-element list
 * Loading stops at the first error. */
#include "fm/config.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "fm/sbuf.h"

#define MAX_FILE_BYTES (1 << 20)

/* Where the value being assigned comes from: a file (messages carry the
 * node's line:col) or an override (messages carry `prefix`). */
typedef struct src {
    const char *file;
    const char *prefix;
    int how;
} src;

/* ---- small helpers ---- */

static int nkeys(void)
{
    int n;
    fm_config_keys(&n);
    return n;
}

static const fm_cfg_key *key_at(int i)
{
    int n;
    return fm_config_keys(&n) + i;
}

/* Shortest of %.15g..%.17g that reads back exactly. */
static void fmt_double(double v, char *out, size_t n)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* A bound for messages: integers without an exponent. */
static void fmt_bound(double v, char *out, size_t n)
{
    if (v == nearbyint(v) && fabs(v) < 1e15)
        snprintf(out, n, "%.0f", v);
    else
        fmt_double(v, out, n);
}

static int edit_distance(const char *a, const char *b)
{
    int la = (int)strnlen(a, 63), lb = (int)strnlen(b, 63);
    int prev[64], cur[64];
    for (int j = 0; j <= lb; j++)
        prev[j] = j;
    for (int i = 1; i <= la; i++) {
        cur[0] = i;
        for (int j = 1; j <= lb; j++) {
            int d = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < d)
                d = prev[j] + 1;
            if (cur[j - 1] + 1 < d)
                d = cur[j - 1] + 1;
            cur[j] = d;
        }
        memcpy(prev, cur, sizeof(int) * (size_t)(lb + 1));
    }
    return prev[lb];
}

static const char *leaf_of(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? dot + 1 : name;
}

/* Length of the section part of a key name ("flow.lr" -> 4). */
static size_t section_len(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

static bool is_section(const char *s)
{
    for (int i = 0; i < nkeys(); i++) {
        const char *k = key_at(i)->name;
        if (section_len(k) == strlen(s) && strncmp(k, s, strlen(s)) == 0)
            return true;
    }
    return false;
}

/* The closest key (or section, if sections) to `name`, as " (did you mean
 * X?)", or "" if nothing is close. A key with the same leaf in another
 * section counts as distance 2. */
static void suggest(const char *name, bool sections, char *out, size_t n)
{
    char best[128] = "";
    int bestd = 1 << 30;
    for (int i = 0; i < nkeys(); i++) {
        const char *k = key_at(i)->name;
        int d = edit_distance(name, k);
        if (strcmp(leaf_of(name), leaf_of(k)) == 0 && d > 2)
            d = 2;
        if (d < bestd) {
            bestd = d;
            snprintf(best, sizeof best, "%s", k);
        }
        if (sections && (i == 0 || section_len(k) != section_len(key_at(i - 1)->name) ||
                         strncmp(k, key_at(i - 1)->name, section_len(k)) != 0)) {
            char sec[64];
            snprintf(sec, sizeof sec, "%.*s", (int)section_len(k), k);
            d = edit_distance(name, sec);
            if (d < bestd) {
                bestd = d;
                snprintf(best, sizeof best, "%s", sec);
            }
        }
    }
    if (best[0] && (bestd <= 2 || (size_t)bestd * 3 <= strlen(name)))
        snprintf(out, n, " (did you mean %s?)", best);
    else
        out[0] = '\0';
}

static bool valid_utf8(const unsigned char *s)
{
    while (*s) {
        int extra = *s < 0x80 ? 0 : (*s & 0xe0) == 0xc0 ? 1 : (*s & 0xf0) == 0xe0 ? 2 : (*s & 0xf8) == 0xf0 ? 3 : -1;
        if (extra < 0 || (extra == 1 && *s < 0xc2))
            return false;
        s++;
        for (int i = 0; i < extra; i++, s++)
            if ((*s & 0xc0) != 0x80)
                return false;
    }
    return true;
}

/* ---- errors ---- */

static int fail_node(const src *s, const yaml_node_t *n, const char *key, fm_err *e, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_node(const src *s, const yaml_node_t *n, const char *key, fm_err *e, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->file && n)
        return fm_fail(e, FM_ERR_USAGE, "%s:%d:%d: %s: %s", s->file, (int)n->start_mark.line + 1,
                       (int)n->start_mark.column + 1, key, msg);
    return fm_fail(e, FM_ERR_USAGE, "%s: %s: %s", s->prefix ? s->prefix : "config", key, msg);
}

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

/* "got ..." text for a node: "fast" (quoted), nothing, null, a list, a mapping. */
static void describe(const yaml_node_t *n, char *out, size_t cap)
{
    if (n->type == YAML_SEQUENCE_NODE)
        snprintf(out, cap, "a list");
    else if (n->type == YAML_MAPPING_NODE)
        snprintf(out, cap, "a mapping");
    else if (is_null(n))
        snprintf(out, cap, "%s", n->data.scalar.length ? "null" : "nothing");
    else if (n->data.scalar.length > 40)
        snprintf(out, cap, "\"%.37s...\"", (const char *)n->data.scalar.value);
    else
        snprintf(out, cap, "\"%s\"", (const char *)n->data.scalar.value);
}

/* What a value of this type looks like, for "expected ...". */
static void expected(const fm_cfg_key *k, bool element, char *out, size_t cap)
{
    fm_sbuf b = { out, cap, 0 };
    out[0] = '\0';
    bool list = !element && (k->type == FM_T_INTS || k->type == FM_T_FLOATS || k->type == FM_T_ENUMS);
    if (list)
        fm_sbuf_printf(&b, "a list of ");
    switch (k->type) {
    case FM_T_INT:
    case FM_T_INTS:
        fm_sbuf_printf(&b, list ? "integers" : "an integer");
        break;
    case FM_T_FLOAT:
    case FM_T_FLOATS:
        fm_sbuf_printf(&b, list ? "numbers" : "a number");
        break;
    case FM_T_BOOL:
        fm_sbuf_printf(&b, "true or false");
        break;
    case FM_T_STRING:
        fm_sbuf_printf(&b, "a string");
        break;
    case FM_T_ENUM:
    case FM_T_ENUMS:
        fm_sbuf_printf(&b, list ? "names from " : "one of ");
        for (int i = 0; k->names[i]; i++)
            fm_sbuf_printf(&b, "%s%s", i ? ", " : "", k->names[i]);
        break;
    }
}

static int fail_type(const src *s, const yaml_node_t *n, const fm_cfg_key *k, const char *key, bool element,
                     fm_err *e)
{
    char want[256], got[64];
    expected(k, element, want, sizeof want);
    describe(n, got, sizeof got);
    bool quoted = n->type == YAML_SCALAR_NODE && n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE &&
                  k->type != FM_T_STRING && k->type != FM_T_ENUM && k->type != FM_T_ENUMS;
    return fail_node(s, n, key, e, "expected %s, got %s%s", want, quoted ? "the quoted string " : "", got);
}

static int fail_range(const src *s, const yaml_node_t *n, const fm_cfg_key *k, const char *key, fm_err *e)
{
    char lo[32], hi[32];
    fmt_bound(k->lo, lo, sizeof lo);
    fmt_bound(k->hi, hi, sizeof hi);
    return fail_node(s, n, key, e, "%s is out of range %s%s, %s]", (const char *)n->data.scalar.value,
                     (k->flags & FM_CFG_LO_OPEN) ? "(" : "[", lo, hi);
}

/* ---- scalars ---- */

static bool all_digits(const char *p)
{
    if (!*p)
        return false;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* [-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)? */
static bool looks_like_number(const char *p)
{
    if (*p == '+' || *p == '-')
        p++;
    int digits = 0;
    while (*p >= '0' && *p <= '9')
        p++, digits++;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits++;
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!all_digits(p))
            return false;
        return true;
    }
    return *p == '\0';
}

static bool in_range(const fm_cfg_key *k, double v)
{
    bool lo_ok = (k->flags & FM_CFG_LO_OPEN) ? v > k->lo : v >= k->lo;
    return lo_ok && v <= k->hi;
}

/* Parse one scalar node as the key's (element) type into dst. */
static int parse_scalar(const src *s, const yaml_node_t *n, const fm_cfg_key *k, const char *key, bool element,
                        void *dst, fm_err *e)
{
    if (n->type != YAML_SCALAR_NODE)
        return fail_type(s, n, k, key, element, e);
    const char *v = (const char *)n->data.scalar.value;
    bool plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    switch (k->type) {
    case FM_T_INT:
    case FM_T_INTS: {
        const char *p = (*v == '+' || *v == '-') ? v + 1 : v;
        if (!plain || !all_digits(p))
            return fail_type(s, n, k, key, element, e);
        errno = 0;
        long long x = strtoll(v, NULL, 10);
        if (errno == ERANGE || !in_range(k, (double)x))
            return fail_range(s, n, k, key, e);
        *(int *)dst = (int)x;
        return FM_OK;
    }
    case FM_T_FLOAT:
    case FM_T_FLOATS: {
        if (!plain || !looks_like_number(v))
            return fail_type(s, n, k, key, element, e);
        double x = strtod(v, NULL);
        if (!isfinite(x) || !in_range(k, x))
            return fail_range(s, n, k, key, e);
        *(double *)dst = x;
        return FM_OK;
    }
    case FM_T_BOOL:
        if (plain && (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")))
            *(bool *)dst = true;
        else if (plain && (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")))
            *(bool *)dst = false;
        else
            return fail_type(s, n, k, key, element, e);
        return FM_OK;
    case FM_T_STRING: {
        if (is_null(n))
            return fail_type(s, n, k, key, element, e);
        size_t len = n->data.scalar.length;
        if (strlen(v) != len)
            return fail_node(s, n, key, e, "contains a NUL character");
        if ((double)len < k->lo)
            return fail_node(s, n, key, e, "must not be empty");
        if ((double)len > k->hi)
            return fail_node(s, n, key, e, "is longer than %.0f bytes", k->hi);
        memcpy(dst, v, len + 1);
        return FM_OK;
    }
    case FM_T_ENUM:
    case FM_T_ENUMS:
        for (int i = 0; k->names[i]; i++)
            if (!strcmp(v, k->names[i])) {
                *(int *)dst = i;
                return FM_OK;
            }
        return fail_type(s, n, k, key, true, e);
    }
    return fm_fail(e, FM_ERR_INTERNAL, "config: %s: unknown type %d", key, (int)k->type);
}

/* Assign node n (from document d) to key ki of c. */
static int assign(fm_config *c, int ki, yaml_document_t *d, yaml_node_t *n, const src *s, fm_err *e)
{
    const fm_cfg_key *k = key_at(ki);
    char *p = (char *)c + k->off;
    if (k->type != FM_T_INTS && k->type != FM_T_FLOATS && k->type != FM_T_ENUMS)
        return parse_scalar(s, n, k, k->name, false, p, e);

    /* a list: parse into a temporary so a bad element leaves c untouched */
    size_t esize = k->type == FM_T_FLOATS ? sizeof(double) : sizeof(int);
    union {
        fm_ilist i;
        fm_flist f;
    } tmp;
    memset(&tmp, 0, sizeof tmp);
    int count = 0;
    char *vals = k->type == FM_T_FLOATS ? (char *)tmp.f.v : (char *)tmp.i.v;
    char ekey[96];
    if (n->type == YAML_SCALAR_NODE && !is_null(n)) {
        snprintf(ekey, sizeof ekey, "%s", k->name);
        FM_TRY(parse_scalar(s, n, k, ekey, true, vals, e));
        count = 1;
    } else if (n->type == YAML_SEQUENCE_NODE) {
        int len = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (len > FM_CFG_LIST_MAX)
            return fail_node(s, n, k->name, e, "at most %d elements, got %d", FM_CFG_LIST_MAX, len);
        for (int i = 0; i < len; i++) {
            yaml_node_t *item = yaml_document_get_node(d, n->data.sequence.items.start[i]);
            snprintf(ekey, sizeof ekey, "%s[%d]", k->name, i);
            FM_TRY(parse_scalar(s, item, k, ekey, true, vals + esize * (size_t)i, e));
        }
        count = len;
    } else {
        return fail_type(s, n, k, k->name, false, e);
    }
    if (count < k->min_n)
        return fail_node(s, n, k->name, e, "expected at least %d element%s, got %d", k->min_n,
                         k->min_n == 1 ? "" : "s", count);
    if (k->type == FM_T_FLOATS) {
        tmp.f.n = count;
        memcpy(p, &tmp.f, sizeof tmp.f);
    } else {
        tmp.i.n = count;
        memcpy(p, &tmp.i, sizeof tmp.i);
    }
    return FM_OK;
}

/* Parse `text` as a one-document YAML value and assign it to key ki.
 * String keys take the text verbatim. */
static int assign_text(fm_config *c, int ki, const char *text, const src *s, fm_err *e)
{
    const fm_cfg_key *k = key_at(ki);
    yaml_node_t fake;
    memset(&fake, 0, sizeof fake);
    if (k->type == FM_T_STRING) {
        if (!valid_utf8((const unsigned char *)text))
            return fail_node(s, NULL, k->name, e, "is not valid UTF-8");
        fake.type = YAML_SCALAR_NODE;
        fake.data.scalar.value = (yaml_char_t *)(uintptr_t)text;
        fake.data.scalar.length = strlen(text);
        fake.data.scalar.style = YAML_DOUBLE_QUOTED_SCALAR_STYLE; /* verbatim: never null */
        return parse_scalar(s, &fake, k, k->name, false, (char *)c + k->off, e);
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return fm_fail(e, FM_ERR_INTERNAL, "config: cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = fail_node(s, NULL, k->name, e, "malformed value: %s", parser.problem ? parser.problem : "unknown error");
        yaml_parser_delete(&parser);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    int rc;
    if (!root) { /* empty text */
        fake.type = YAML_SCALAR_NODE;
        fake.data.scalar.value = (yaml_char_t *)(uintptr_t) "";
        fake.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
        rc = assign(c, ki, &doc, &fake, s, e);
    } else {
        rc = assign(c, ki, &doc, root, s, e);
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- defaults ---- */

static void set_origin(fm_config *c, int ki, int how, const yaml_node_t *key, const yaml_node_t *val)
{
    c->origin[ki].how = how;
    c->origin[ki].line = val ? (int)val->start_mark.line + 1 : 0;
    c->origin[ki].col = val ? (int)val->start_mark.column + 1 : 0;
    c->origin[ki].key_line = key ? (int)key->start_mark.line + 1 : 0;
    c->origin[ki].key_col = key ? (int)key->start_mark.column + 1 : 0;
}

int fm_config_defaults(fm_config *c, fm_err *e)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < nkeys(); i++) {
        src s = { NULL, "default", FM_CFG_FROM_DEFAULT };
        int rc = assign_text(c, i, key_at(i)->def, &s, e);
        if (rc != FM_OK) {
            e->code = FM_ERR_INTERNAL;
            return fm_err_prefix(e, "config table");
        }
        set_origin(c, i, FM_CFG_FROM_DEFAULT, NULL, NULL);
    }
    return FM_OK;
}

/* ---- the file ---- */

/* Assign the value node of full key `name` (keyn: the key node, for its
 * position) from the file. */
static int load_key(fm_config *c, const char *name, yaml_document_t *d, yaml_node_t *keyn, yaml_node_t *val,
                    const src *s, fm_err *e)
{
    int ki = fm_config_key_index(name);
    if (ki < 0) {
        char hint[160];
        suggest(name, false, hint, sizeof hint);
        return fail_node(s, keyn, name, e, "unknown key%s", hint);
    }
    if (c->origin[ki].how == FM_CFG_FROM_FILE)
        return fail_node(s, keyn, name, e, "duplicate key (first set at line %d)", c->origin[ki].key_line);
    FM_TRY(assign(c, ki, d, val, s, e));
    set_origin(c, ki, FM_CFG_FROM_FILE, keyn, val);
    return FM_OK;
}

static int load_section(fm_config *c, const char *section, yaml_document_t *d, yaml_node_t *val, const src *s,
                        fm_err *e)
{
    if (is_null(val))
        return FM_OK; /* "eval:" with nothing under it */
    if (val->type != YAML_MAPPING_NODE) {
        char got[64];
        describe(val, got, sizeof got);
        return fail_node(s, val, section, e, "expected a mapping of %s.* keys, got %s", section, got);
    }
    for (yaml_node_pair_t *p = val->data.mapping.pairs.start; p < val->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key), *v = yaml_document_get_node(d, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            char got[64];
            describe(k, got, sizeof got);
            return fail_node(s, k, section, e, "expected a key name, got %s", got);
        }
        char name[192];
        snprintf(name, sizeof name, "%s.%s", section, (const char *)k->data.scalar.value);
        FM_TRY(load_key(c, name, d, k, v, s, e));
    }
    return FM_OK;
}

static int load_root(fm_config *c, yaml_document_t *d, const src *s, fm_err *e)
{
    yaml_node_t *root = yaml_document_get_root_node(d);
    if (!root || is_null(root))
        return FM_OK; /* an empty file: all defaults */
    if (root->type != YAML_MAPPING_NODE) {
        char got[64];
        describe(root, got, sizeof got);
        return fm_fail(e, FM_ERR_USAGE, "%s:%d:%d: expected a mapping of sections (run:, data:, ...), got %s", s->file,
                       (int)root->start_mark.line + 1, (int)root->start_mark.column + 1, got);
    }
    int seen_line[64] = { 0 };
    const char *seen_name[64] = { 0 };
    int nseen = 0;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key), *v = yaml_document_get_node(d, p->value);
        if (k->type != YAML_SCALAR_NODE) {
            char got[64];
            describe(k, got, sizeof got);
            return fm_fail(e, FM_ERR_USAGE, "%s:%d:%d: expected a section name, got %s", s->file,
                           (int)k->start_mark.line + 1, (int)k->start_mark.column + 1, got);
        }
        const char *name = (const char *)k->data.scalar.value;
        if (strchr(name, '.')) { /* "flow.lr: 1e-3" at the top level */
            FM_TRY(load_key(c, name, d, k, v, s, e));
            continue;
        }
        if (!is_section(name)) {
            char hint[160];
            suggest(name, true, hint, sizeof hint);
            return fail_node(s, k, name, e, "unknown section%s", hint);
        }
        for (int i = 0; i < nseen; i++)
            if (!strcmp(seen_name[i], name))
                return fail_node(s, k, name, e, "duplicate section (first at line %d)", seen_line[i]);
        if (nseen < 64) {
            seen_name[nseen] = name;
            seen_line[nseen++] = (int)k->start_mark.line + 1;
        }
        FM_TRY(load_section(c, name, d, v, s, e));
    }
    return FM_OK;
}

static int fail_yaml(const yaml_parser_t *p, const char *file, fm_err *e)
{
    if (p->error == YAML_MEMORY_ERROR)
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory parsing YAML", file);
    char ctx[160] = "";
    if (p->context)
        snprintf(ctx, sizeof ctx, " (%s that starts at line %d, column %d)", p->context, (int)p->context_mark.line + 1,
                 (int)p->context_mark.column + 1);
    return fm_fail(e, FM_ERR_USAGE, "%s:%d:%d: malformed YAML: %s%s", file, (int)p->problem_mark.line + 1,
                   (int)p->problem_mark.column + 1, p->problem ? p->problem : "unknown error", ctx);
}

/* "runs/<stem of name>" */
static void default_out(const char *name, char *out, size_t n)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    if (len == 0)
        snprintf(out, n, "runs/default");
    else
        snprintf(out, n, "runs/%.*s", len, base);
}

int fm_config_load_string(fm_config *c, const char *text, size_t len, const char *name, fm_err *e)
{
    FM_TRY(fm_config_defaults(c, e));
    snprintf(c->file, sizeof c->file, "%s", name);
    default_out(name, c->run.out, sizeof c->run.out);
    src s = { c->file, NULL, FM_CFG_FROM_FILE };

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return fm_fail(e, FM_ERR_INTERNAL, "config: cannot initialise the YAML parser");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = fail_yaml(&parser, name, e);
        yaml_parser_delete(&parser);
        return rc;
    }
    int rc = load_root(c, &doc, &s, e);
    yaml_document_delete(&doc);
    if (rc == FM_OK) { /* a second document is an error */
        if (!yaml_parser_load(&parser, &doc)) {
            rc = fail_yaml(&parser, name, e);
        } else {
            yaml_node_t *extra = yaml_document_get_root_node(&doc);
            if (extra)
                rc = fm_fail(e, FM_ERR_USAGE, "%s:%d:%d: expected one YAML document, found a second", name,
                             (int)doc.start_mark.line + 1, (int)doc.start_mark.column + 1);
            yaml_document_delete(&doc);
        }
    }
    yaml_parser_delete(&parser);
    return rc;
}

int fm_config_load(fm_config *c, const char *path, fm_err *e)
{
    struct stat st; /* a FIFO or device would block fopen or never end */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return fm_fail(e, FM_ERR_USAGE, "%s: the config is not a regular file (a directory, FIFO or device)", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fm_fail(e, FM_ERR_USAGE, "%s: cannot open config file: %s", path, strerror(errno));
    char *buf = malloc(MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(f);
        return fm_fail(e, FM_ERR_INTERNAL, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, MAX_FILE_BYTES + 1, f);
    int err = ferror(f) ? errno : 0;
    fclose(f);
    int rc;
    if (err)
        rc = fm_fail(e, FM_ERR_USAGE, "%s: cannot read config file: %s", path, strerror(err));
    else if (n > MAX_FILE_BYTES)
        rc = fm_fail(e, FM_ERR_USAGE, "%s: config file is larger than %d bytes", path, MAX_FILE_BYTES);
    else
        rc = fm_config_load_string(c, buf, n, path, e);
    free(buf);
    return rc;
}

/* ---- overrides ---- */

int fm_config_set(fm_config *c, const char *assignment, fm_err *e)
{
    char prefix[FM_CFG_STR_MAX + 64];
    snprintf(prefix, sizeof prefix, "--set %s", assignment);
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return fm_fail(e, FM_ERR_USAGE, "%s: expected section.key=value", prefix);
    char key[192];
    snprintf(key, sizeof key, "%.*s", (int)(eq - assignment), assignment);
    int ki = fm_config_key_index(key);
    if (ki < 0) {
        char hint[160];
        suggest(key, false, hint, sizeof hint);
        return fm_fail(e, FM_ERR_USAGE, "%s: %s: unknown key%s", prefix, key, hint);
    }
    src s = { NULL, prefix, FM_CFG_FROM_SET };
    FM_TRY(assign_text(c, ki, eq + 1, &s, e));
    set_origin(c, ki, FM_CFG_FROM_SET, NULL, NULL);
    return FM_OK;
}

int fm_config_set_out(fm_config *c, const char *dir, fm_err *e)
{
    char prefix[FM_CFG_STR_MAX + 64];
    snprintf(prefix, sizeof prefix, "--out %s", dir);
    int ki = fm_config_key_index("run.out");
    src s = { NULL, prefix, FM_CFG_FROM_OUT };
    FM_TRY(assign_text(c, ki, dir, &s, e));
    set_origin(c, ki, FM_CFG_FROM_OUT, NULL, NULL);
    return FM_OK;
}

/* ---- output ---- */

static void put_string(fm_sbuf *b, const char *v)
{
    fm_sbuf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '"' || *p == '\\')
            fm_sbuf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fm_sbuf_printf(b, "\\x%02x", *p);
        else
            fm_sbuf_printf(b, "%c", *p);
    }
    fm_sbuf_printf(b, "\"");
}

/* The value of key k in c as YAML text. */
static void format_value(const fm_config *c, const fm_cfg_key *k, fm_sbuf *b)
{
    const char *p = (const char *)c + k->off;
    char num[40];
    switch (k->type) {
    case FM_T_INT:
        fm_sbuf_printf(b, "%d", *(const int *)p);
        break;
    case FM_T_FLOAT:
        fmt_double(*(const double *)p, num, sizeof num);
        fm_sbuf_printf(b, "%s", num);
        break;
    case FM_T_BOOL:
        fm_sbuf_printf(b, "%s", *(const bool *)p ? "true" : "false");
        break;
    case FM_T_STRING:
        put_string(b, p);
        break;
    case FM_T_ENUM:
        fm_sbuf_printf(b, "%s", k->names[*(const int *)p]);
        break;
    case FM_T_INTS:
    case FM_T_ENUMS: {
        const fm_ilist *l = (const fm_ilist *)p;
        fm_sbuf_printf(b, "[");
        for (int i = 0; i < l->n; i++) {
            if (k->type == FM_T_INTS)
                fm_sbuf_printf(b, "%s%d", i ? ", " : "", l->v[i]);
            else
                fm_sbuf_printf(b, "%s%s", i ? ", " : "", k->names[l->v[i]]);
        }
        fm_sbuf_printf(b, "]");
        break;
    }
    case FM_T_FLOATS: {
        const fm_flist *l = (const fm_flist *)p;
        fm_sbuf_printf(b, "[");
        for (int i = 0; i < l->n; i++) {
            fmt_double(l->v[i], num, sizeof num);
            fm_sbuf_printf(b, "%s%s", i ? ", " : "", num);
        }
        fm_sbuf_printf(b, "]");
        break;
    }
    }
}

int fm_config_dump(const fm_config *c, FILE *f, fm_err *e)
{
    char line[4 * FM_CFG_STR_MAX + 64]; /* a string escapes to at most 4 bytes per byte */
    fprintf(f, "# fmtrain configuration (resolved)\n");
    for (int i = 0; i < nkeys(); i++) {
        const fm_cfg_key *k = key_at(i);
        size_t sl = section_len(k->name);
        if (i == 0 || sl != section_len(key_at(i - 1)->name) || strncmp(k->name, key_at(i - 1)->name, sl) != 0)
            fprintf(f, "%.*s:\n", (int)sl, k->name);
        fm_sbuf b = { line, sizeof line, 0 };
        line[0] = '\0';
        format_value(c, k, &b);
        fprintf(f, "  %s: %s\n", leaf_of(k->name), line);
    }
    if (fflush(f) != 0 || ferror(f))
        return fm_fail(e, FM_ERR_IO, "cannot write the configuration: %s", strerror(errno));
    return FM_OK;
}

int fm_config_key_equal(const fm_config *a, const fm_config *b, int ki)
{
    const fm_cfg_key *k = key_at(ki);
    const char *pa = (const char *)a + k->off, *pb = (const char *)b + k->off;
    switch (k->type) {
    case FM_T_INT:
    case FM_T_ENUM:
        return *(const int *)pa == *(const int *)pb;
    case FM_T_FLOAT:
        return *(const double *)pa == *(const double *)pb;
    case FM_T_BOOL:
        return *(const bool *)pa == *(const bool *)pb;
    case FM_T_STRING:
        return strcmp(pa, pb) == 0;
    case FM_T_INTS:
    case FM_T_ENUMS: {
        const fm_ilist *x = (const fm_ilist *)pa, *y = (const fm_ilist *)pb;
        return x->n == y->n && memcmp(x->v, y->v, sizeof(int) * (size_t)x->n) == 0;
    }
    case FM_T_FLOATS: {
        const fm_flist *x = (const fm_flist *)pa, *y = (const fm_flist *)pb;
        if (x->n != y->n)
            return 0;
        for (int j = 0; j < x->n; j++)
            if (x->v[j] != y->v[j])
                return 0;
        return 1;
    }
    }
    return 0;
}

int fm_config_equal(const fm_config *a, const fm_config *b)
{
    for (int i = 0; i < nkeys(); i++)
        if (!fm_config_key_equal(a, b, i))
            return 0;
    return 1;
}

/* The bytes a value of each type takes in fm_config. */
static const size_t type_size[] = {
    [FM_T_INT] = sizeof(int),         [FM_T_ENUM] = sizeof(int),         [FM_T_FLOAT] = sizeof(double),
    [FM_T_BOOL] = sizeof(bool),       [FM_T_STRING] = FM_CFG_STR_MAX,    [FM_T_INTS] = sizeof(fm_ilist),
    [FM_T_ENUMS] = sizeof(fm_ilist),  [FM_T_FLOATS] = sizeof(fm_flist),
};

void fm_config_copy_key(fm_config *dst, const fm_config *src, int ki)
{
    const fm_cfg_key *k = key_at(ki);
    memcpy((char *)dst + k->off, (const char *)src + k->off, type_size[k->type]);
    dst->origin[ki] = src->origin[ki];
}

void fm_config_format(const fm_config *c, int ki, char *buf, size_t n)
{
    fm_sbuf b = { buf, n, 0 };
    buf[0] = '\0';
    format_value(c, key_at(ki), &b);
}

void fm_config_where(const fm_config *c, const char *key, char *buf, size_t n)
{
    int ki = fm_config_key_index(key);
    const struct fm_cfg_origin *o = ki >= 0 ? &c->origin[ki] : NULL;
    fm_sbuf b = { buf, n, 0 };
    buf[0] = '\0';
    if (o && o->how == FM_CFG_FROM_FILE) {
        fm_sbuf_printf(&b, "%s:%d:%d", c->file, o->line, o->col);
    } else if (o && (o->how == FM_CFG_FROM_SET || o->how == FM_CFG_FROM_OUT)) {
        if (o->how == FM_CFG_FROM_SET)
            fm_sbuf_printf(&b, "--set %s=", key);
        else
            fm_sbuf_printf(&b, "--out ");
        char val[FM_CFG_STR_MAX + 64];
        fm_sbuf vb = { val, sizeof val, 0 };
        val[0] = '\0';
        if (o->how == FM_CFG_FROM_OUT)
            fm_sbuf_printf(&vb, "%s", c->run.out);
        else
            format_value(c, key_at(ki), &vb);
        fm_sbuf_printf(&b, "%s", val);
    } else {
        fm_sbuf_printf(&b, "%s", c->file[0] ? c->file : "defaults");
    }
}

/* ---- reference ---- */

static const char *type_name(const fm_cfg_key *k)
{
    switch (k->type) {
    case FM_T_INT:
        return "int";
    case FM_T_FLOAT:
        return "float";
    case FM_T_BOOL:
        return "bool";
    case FM_T_STRING:
        return "string";
    case FM_T_ENUM:
        return "enum";
    case FM_T_INTS:
        return "list of int";
    case FM_T_FLOATS:
        return "list of float";
    case FM_T_ENUMS:
        return "list of enum";
    }
    return "?";
}

static void range_text(const fm_cfg_key *k, fm_sbuf *b)
{
    char lo[32], hi[32];
    fmt_bound(k->lo, lo, sizeof lo);
    fmt_bound(k->hi, hi, sizeof hi);
    bool list = k->type == FM_T_INTS || k->type == FM_T_FLOATS || k->type == FM_T_ENUMS;
    switch (k->type) {
    case FM_T_BOOL:
        fm_sbuf_printf(b, "true, false");
        break;
    case FM_T_STRING:
        fm_sbuf_printf(b, "%s to %s bytes", lo, hi);
        break;
    case FM_T_ENUM:
    case FM_T_ENUMS:
        if (list)
            fm_sbuf_printf(b, "each ");
        for (int i = 0; k->names[i]; i++)
            fm_sbuf_printf(b, "%s%s", i ? ", " : "", k->names[i]);
        break;
    default:
        fm_sbuf_printf(b, "%s%s%s, %s]", list ? "each in " : "", (k->flags & FM_CFG_LO_OPEN) ? "(" : "[", lo, hi);
    }
    if (list)
        fm_sbuf_printf(b, "; %d to %d elements", k->min_n, FM_CFG_LIST_MAX);
}

int fm_config_reference(FILE *f, fm_err *e)
{
    char range[512];
    for (int i = 0; i < nkeys(); i++) {
        const fm_cfg_key *k = key_at(i);
        size_t sl = section_len(k->name);
        if (i == 0 || sl != section_len(key_at(i - 1)->name) || strncmp(k->name, key_at(i - 1)->name, sl) != 0)
            fprintf(f, "%s### %.*s\n\n| key | type | default | range | meaning |\n|---|---|---|---|---|\n",
                    i ? "\n" : "", (int)sl, k->name);
        fm_sbuf b = { range, sizeof range, 0 };
        range[0] = '\0';
        range_text(k, &b);
        /* run.out's real default depends on the file name (fm_config_load) */
        const char *def = strcmp(k->name, "run.out") == 0 ? "runs/<config file stem>" : k->def;
        fprintf(f, "| `%s` | %s | `%s` | %s | %s |\n", k->name, type_name(k), def, range, k->doc);
    }
    if (fflush(f) != 0 || ferror(f))
        return fm_fail(e, FM_ERR_IO, "cannot write the config reference: %s", strerror(errno));
    return FM_OK;
}
