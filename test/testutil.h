/*
 * testutil: helpers shared by the unit tests (cmocka).
 * tu_load() runs the real loader on a YAML/JSON string and collects what a
 * user would see: the objects that loaded and every error line.
 */
#ifndef MESH_TESTUTIL_H
#define MESH_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "../config/config.h"

#define TU_MAX 256

typedef struct tu_result {
    int ndocs; /* documents seen (loaded + failed + skipped) */
    int nfailed; /* documents rejected */
    int nobjs;
    cfg_object_t *objs[TU_MAX];
    int nerrors;
    char *errors[TU_MAX]; /* every error line, in order */
    int nwarnings;
    char *warnings[TU_MAX];
} tu_result_t;

/* Loads a YAML or JSON string as if it were file `name` (may be NULL). */
void tu_load(const char *text, const char *name, tu_result_t *r);
/* Loads a file (path relative to the repository root or absolute). */
void tu_load_file(const char *path, tu_result_t *r);
void tu_free(tu_result_t *r);
/* True when some error line contains every one of the NULL-terminated substrings. */
bool tu_error_has(const tu_result_t *r, ...);
/* Prints the errors (for failing assertions). */
void tu_dump(const tu_result_t *r);
/* Absolute path of a file under ../shared/testdata (or $MESH_SHARED/testdata). */
const char *tu_shared(const char *rel);
/* GET http://127.0.0.1:port/path (10 s timeout); the body (caller frees) and
 * the status in *status. Fails the test if no response comes. */
char *tu_http_get(int port, const char *path, long *status);
/* The first loaded object of the given kind, or NULL. */
const cfg_object_t *tu_obj(const tu_result_t *r, cfg_kind_t kind);

/* Asserts the document is rejected with an error line holding s1 and s2 (s2 may be NULL). */
void tu_expect_rejected(const char *yaml, const char *s1, const char *s2);
/* Asserts the text loads into exactly one object without error. */
void tu_expect_loads(const char *yaml);
/* Loads a file under the shared testdata without its "_err:" lines (the
 * expected message of Istio's validation cases, not part of the object). */
void tu_load_stripped(const char *rel, tu_result_t *r);

/* Asserts that the text loads with no error and returns the single object. */
#define TU_EXPECT_OK(r) do { if ((r)->nerrors) tu_dump(r); assert_int_equal((r)->nerrors, 0); } while (0)

#endif
