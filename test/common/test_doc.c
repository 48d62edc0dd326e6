/* Tests of the document tree: YAML and JSON through one code path. */
#include <stdlib.h>
#include <string.h>

#include "../testutil.h"
#include "../../common/doc.h"

#define MAXD 16

struct docs {
    int n;
    doc_t d[MAXD];
    arena_t *keep[MAXD];
    const doc_node_t *root[MAXD];
    char err[MAXD][256];
};

static int grab(void *ud, const doc_t *d)
{
    struct docs *s = ud;
    if (s->n >= MAXD)
        return 1;
    int i = s->n++;
    s->d[i] = *d;
    s->keep[i] = arena_new(1024);
    s->root[i] = d->root ? doc_copy(s->keep[i], d->root) : NULL;
    snprintf(s->err[i], sizeof(s->err[i]), "%s", d->error ? d->error : "");
    return 0;
}

static void parse(struct docs *s, const char *text, doc_format_t fmt)
{
    memset(s, 0, sizeof(*s));
    doc_parse(text, strlen(text), fmt, grab, s);
}

static void release(struct docs *s)
{
    for (int i = 0; i < s->n; i++)
        arena_free(s->keep[i]);
}

static void test_yaml_scalars_resolve_like_kubectl(void **state)
{
    (void)state;
    struct docs s;
    parse(&s,
          "a: 80\nb: \"80\"\nc: yes\nd: off\ne: ~\nf: 0.1\ng: v1\nh: 0x1F\ni: 010\nj: 'true'\n"
          "k: 1.2.3.4\nl: -5\nm:\nn: .inf\n",
          DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    const doc_node_t *r = s.root[0];
    assert_int_equal(doc_map_get(r, "a")->type, DOC_INT);
    assert_int_equal(doc_map_get(r, "a")->v.i, 80);
    assert_int_equal(doc_map_get(r, "b")->type, DOC_STR);
    assert_int_equal(doc_map_get(r, "c")->type, DOC_BOOL);
    assert_true(doc_map_get(r, "c")->v.b);
    assert_int_equal(doc_map_get(r, "d")->type, DOC_BOOL);
    assert_false(doc_map_get(r, "d")->v.b);
    assert_int_equal(doc_map_get(r, "e")->type, DOC_NULL);
    assert_int_equal(doc_map_get(r, "f")->type, DOC_FLOAT);
    assert_true(doc_map_get(r, "f")->v.f > 0.0999 && doc_map_get(r, "f")->v.f < 0.1001);
    assert_string_equal(doc_str(doc_map_get(r, "g")), "v1");
    assert_int_equal(doc_map_get(r, "h")->v.i, 31);
    assert_int_equal(doc_map_get(r, "i")->v.i, 8);
    assert_int_equal(doc_map_get(r, "j")->type, DOC_STR);
    assert_int_equal(doc_map_get(r, "k")->type, DOC_STR);
    assert_int_equal(doc_map_get(r, "l")->v.i, -5);
    assert_int_equal(doc_map_get(r, "m")->type, DOC_NULL);
    assert_int_equal(doc_map_get(r, "n")->type, DOC_FLOAT);
    release(&s);
}

static void test_yaml_multi_document_and_lines(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "# comment\na: 1\n---\nb: 2\n--- # another\n\nc:\n  d: 3\n...\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 3);
    assert_int_equal(doc_map_get(s.root[0], "a")->line, 2);
    assert_int_equal(doc_map_get(s.root[1], "b")->line, 4);
    const doc_node_t *c = doc_map_get(s.root[2], "c");
    assert_int_equal(c->type, DOC_MAP);
    assert_int_equal(doc_map_get(c, "d")->line, 8);
    release(&s);
}

static void test_yaml_broken_document_does_not_hide_others(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "a: 1\n---\nb: [1, 2\nc: 3\n---\nd: 4\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 3);
    assert_non_null(s.root[0]);
    assert_null(s.root[1]);
    assert_true(strncmp(s.err[1], "line ", 5) == 0);
    assert_true(s.d[1].error_line >= 3 && s.d[1].error_line <= 5);
    assert_non_null(s.root[2]);
    assert_int_equal(doc_map_get(s.root[2], "d")->v.i, 4);
    release(&s);
}

static void test_yaml_anchors_aliases_and_merge(void **state)
{
    (void)state;
    struct docs s;
    parse(&s,
          "base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\nlist: &l [a, b]\ncopy: *l\n",
          DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    const doc_node_t *o = doc_map_get(s.root[0], "other");
    assert_int_equal(o->v.map.n, 2);
    assert_int_equal(doc_map_get(o, "x")->v.i, 1);
    assert_int_equal(doc_map_get(o, "y")->v.i, 3); /* own keys win over merged ones */
    assert_int_equal(doc_map_get(s.root[0], "copy")->v.seq.n, 2);
    release(&s);
}

static void test_yaml_duplicate_key_rejected(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "a: 1\nb: 2\na: 3\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    assert_non_null(strstr(s.err[0], "duplicate key \"a\""));
    assert_non_null(strstr(s.err[0], "line 3"));
    release(&s);
}

static void test_yaml_unknown_alias_and_deep_nesting(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "a: *nope\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    release(&s);

    size_t depth = DOC_MAX_DEPTH + 10;
    char *deep = malloc(depth * 2 + 8);
    size_t k = 0;
    for (size_t i = 0; i < depth; i++)
        deep[k++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[k++] = ']';
    deep[k] = '\0';
    parse(&s, deep, DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    assert_non_null(strstr(s.err[0], "nesting"));
    release(&s);
    parse(&s, deep, DOC_FMT_JSON);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    release(&s);
    free(deep);
}

static void test_yaml_alias_cycle_rejected(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "a: &a [1, *a]\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    assert_non_null(strstr(s.err[0], "refers to a node that contains it"));
    release(&s);
}

static void test_yaml_flow_scalars_ending_in_colon(void **state)
{
    (void)state;
    struct docs s;
    /* IPv6 addresses in flow sequences read as strings, as kubectl reads them */
    parse(&s, "addresses: [1.2.3.4, 2001:db8::, fe80::]\n", DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    const doc_node_t *a = doc_map_get(s.root[0], "addresses");
    assert_int_equal(a->v.seq.n, 3);
    assert_string_equal(doc_str(a->v.seq.items[1]), "2001:db8::");
    assert_string_equal(doc_str(a->v.seq.items[2]), "fe80::");
    release(&s);
    /* hostile input that once made the retry grow without bound: one error, quickly */
    parse(&s, "{\"\"\"\xc6\x80\"a:{", DOC_FMT_YAML);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    release(&s);
}

static void test_json_documents(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "{\"a\": 80, \"b\": \"80\", \"c\": true, \"d\": null, \"e\": [1.5, {\"f\": \"g\"}]}\n{\"x\": 1}",
          DOC_FMT_AUTO);
    assert_int_equal(s.n, 2);
    const doc_node_t *r = s.root[0];
    assert_int_equal(doc_map_get(r, "a")->type, DOC_INT);
    assert_int_equal(doc_map_get(r, "b")->type, DOC_STR);
    assert_int_equal(doc_map_get(r, "c")->type, DOC_BOOL);
    assert_int_equal(doc_map_get(r, "d")->type, DOC_NULL);
    const doc_node_t *e = doc_map_get(r, "e");
    assert_int_equal(e->type, DOC_SEQ);
    assert_int_equal(e->v.seq.items[0]->type, DOC_FLOAT);
    assert_string_equal(doc_str(doc_map_get(e->v.seq.items[1], "f")), "g");
    assert_int_equal(s.d[1].line, 2);
    release(&s);
}

static void test_json_syntax_error_names_line(void **state)
{
    (void)state;
    struct docs s;
    parse(&s, "{\n  \"a\": 1,\n  \"b\": ,\n}\n", DOC_FMT_JSON);
    assert_int_equal(s.n, 1);
    assert_null(s.root[0]);
    assert_non_null(strstr(s.err[0], "line 3"));
    release(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yaml_scalars_resolve_like_kubectl),
        cmocka_unit_test(test_yaml_multi_document_and_lines),
        cmocka_unit_test(test_yaml_broken_document_does_not_hide_others),
        cmocka_unit_test(test_yaml_anchors_aliases_and_merge),
        cmocka_unit_test(test_yaml_duplicate_key_rejected),
        cmocka_unit_test(test_yaml_unknown_alias_and_deep_nesting),
        cmocka_unit_test(test_yaml_alias_cycle_rejected),
        cmocka_unit_test(test_yaml_flow_scalars_ending_in_colon),
        cmocka_unit_test(test_json_documents),
        cmocka_unit_test(test_json_syntax_error_names_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
