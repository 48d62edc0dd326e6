/*
 * config_types: the typed mesh configuration model.
 *
 * Every message of the config API (Istio's networking and security kinds and
 * the Kubernetes objects the mesh reads) is described once, as an X-macro in
 * networking.def, security.def or kube.def. From that one description come:
 *   - the C struct (`cfg_HTTPRoute`, members named exactly as the YAML fields),
 *   - the field descriptor table the decoder walks (config/schema.c),
 *   - the OpenAPI schemas of the CRDs (`meshctl crds`).
 *
 * A field line reads   F(M, name, KIND, sub, flags, "doc")   where KIND is:
 *   STR  char *              I32 int32_t          U32 uint32_t     I64 int64_t
 *   BOOL bool                DBL double           DUR int64_t nanoseconds
 *   ENUM int (sub: enum)     MSG cfg_<sub> *      RAW doc_node_t * (free-form)
 *   STRS cfg_strlist_t       U32S cfg_u32list_t   MSGS list of cfg_<sub>
 *   STRMAP / MSGMAP / U32MAP cfg_map_t (string keys; values .str / .msg / .u32)
 *   INTSTR cfg_intstr_t (Kubernetes int-or-string)
 * flags: CFG_REQ (required), CFG_NOEMPTY (string, or every list item, must not
 * be empty), CFG_ONEOF(n) (at most one field of group n may be set),
 * CFG_DEPRECATED (accepted, documented as deprecated).
 *
 * Presence: every struct starts with `_has`, one bit per field in declaration
 * order; test it with CFG_HAS(ptr, Message, field). `_line` is the source line
 * of the message (0 when unknown). All memory of an object belongs to the
 * object's arena: the model is immutable once decoded.
 */
#ifndef MESH_CONFIG_TYPES_H
#define MESH_CONFIG_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/doc.h"

typedef struct cfg_strlist {
    char **v;
    uint32_t n;
} cfg_strlist_t;

typedef struct cfg_u32list {
    uint32_t *v;
    uint32_t n;
} cfg_u32list_t;

typedef struct cfg_mapent {
    char *key;
    union {
        char *str;
        void *msg;
        uint32_t u32;
    };
} cfg_mapent_t;

typedef struct cfg_map {
    cfg_mapent_t *v;
    uint32_t n;
} cfg_map_t;

typedef struct cfg_intstr {
    bool is_str;
    int64_t num;
    char *str;
} cfg_intstr_t;

/* Generic view of a MSGS member: n structs of the sub-message's size. */
typedef struct cfg_list {
    void *v;
    uint32_t n;
} cfg_list_t;

#define CFG_REQ 0x1u
#define CFG_NOEMPTY 0x2u
#define CFG_DEPRECATED 0x4u
#define CFG_ONEOF(n) ((unsigned)(n) << 4)
#define CFG_ONEOF_GROUP(flags) (((flags) >> 4) & 0xfu)

/* ---- C types of each field kind ---- */
#define CFG_CTYPE_STR(sub, name) char *name;
#define CFG_CTYPE_BOOL(sub, name) bool name;
#define CFG_CTYPE_I32(sub, name) int32_t name;
#define CFG_CTYPE_U32(sub, name) uint32_t name;
#define CFG_CTYPE_I64(sub, name) int64_t name;
#define CFG_CTYPE_DBL(sub, name) double name;
#define CFG_CTYPE_DUR(sub, name) int64_t name;
#define CFG_CTYPE_ENUM(sub, name) int name;
#define CFG_CTYPE_MSG(sub, name) struct cfg_##sub *name;
#define CFG_CTYPE_RAW(sub, name) doc_node_t *name;
#define CFG_CTYPE_STRS(sub, name) cfg_strlist_t name;
#define CFG_CTYPE_U32S(sub, name) cfg_u32list_t name;
#define CFG_CTYPE_MSGS(sub, name)                                                                  \
    struct {                                                                                       \
        struct cfg_##sub *v;                                                                       \
        uint32_t n;                                                                                \
    } name;
#define CFG_CTYPE_STRMAP(sub, name) cfg_map_t name;
#define CFG_CTYPE_MSGMAP(sub, name) cfg_map_t name;
#define CFG_CTYPE_U32MAP(sub, name) cfg_map_t name;
#define CFG_CTYPE_INTSTR(sub, name) cfg_intstr_t name;

#define CFG_X_MEMBER(M, name, kind, sub, flags, doc) CFG_CTYPE_##kind(sub, name)
#define CFG_X_FIELDNO(M, name, kind, sub, flags, doc) cfg_##M##__##name,

/* Field-number enum, then the struct, for message M. */
#define CFG_X_DECLARE_MSG(M, mflags)                                                               \
    enum { CFG_MSG_##M(CFG_X_FIELDNO, M) cfg_##M##__nfields };                                     \
    struct cfg_##M {                                                                               \
        uint64_t _has;                                                                             \
        uint32_t _line;                                                                            \
        CFG_MSG_##M(CFG_X_MEMBER, M)                                                               \
    };
#define CFG_X_TYPEDEF_MSG(M, mflags) typedef struct cfg_##M cfg_##M;

#define CFG_X_ENUM_VALUE(E, v) cfg_##E##_##v,
#define CFG_X_DECLARE_ENUM(E) enum cfg_##E { CFG_ENUM_##E(CFG_X_ENUM_VALUE, E) cfg_##E##__count };

#define CFG_HAS(p, M, field) ((((p)->_has) >> cfg_##M##__##field) & 1u)

/* A message whose unknown fields are ignored (Kubernetes objects we only
 * partly model), instead of rejected (the mesh API). */
#define CFG_LENIENT 0x1u

#include "kube.def"
#include "networking.def"
#include "security.def"

#define CFG_ALL_MESSAGES(X) CFG_KUBE_MESSAGES(X) CFG_NETWORKING_MESSAGES(X) CFG_SECURITY_MESSAGES(X)
#define CFG_ALL_ENUMS(X) CFG_KUBE_ENUMS(X) CFG_NETWORKING_ENUMS(X) CFG_SECURITY_ENUMS(X)

CFG_ALL_ENUMS(CFG_X_DECLARE_ENUM)
CFG_ALL_MESSAGES(CFG_X_TYPEDEF_MSG)
CFG_ALL_MESSAGES(CFG_X_DECLARE_MSG)

/* ---- descriptors (config/schema.c) ---- */

typedef enum {
    CFG_K_STR, CFG_K_BOOL, CFG_K_I32, CFG_K_U32, CFG_K_I64, CFG_K_DBL, CFG_K_DUR, CFG_K_ENUM,
    CFG_K_MSG, CFG_K_RAW, CFG_K_STRS, CFG_K_U32S, CFG_K_MSGS, CFG_K_STRMAP, CFG_K_MSGMAP,
    CFG_K_U32MAP, CFG_K_INTSTR
} cfg_field_kind_t;

typedef struct cfg_enum_desc {
    const char *name;
    const char *const *values;
    uint32_t count;
} cfg_enum_desc_t;

struct cfg_desc;

typedef struct cfg_field {
    const char *name;
    uint8_t kind; /* cfg_field_kind_t */
    uint8_t flags;
    uint16_t offset;
    const struct cfg_desc *msg; /* MSG, MSGS, MSGMAP */
    const cfg_enum_desc_t *enm; /* ENUM */
    const char *doc;
} cfg_field_t;

typedef struct cfg_desc {
    const char *name;
    uint32_t size;
    uint32_t flags; /* CFG_LENIENT */
    uint32_t nfields;
    const cfg_field_t *fields;
} cfg_desc_t;

#define CFG_X_EXTERN_DESC(M, mflags) extern const cfg_desc_t cfg_##M##_desc;
#define CFG_X_EXTERN_ENUM(E) extern const cfg_enum_desc_t cfg_enum_##E;
CFG_ALL_MESSAGES(CFG_X_EXTERN_DESC)
CFG_ALL_ENUMS(CFG_X_EXTERN_ENUM)

/* Name of value v of an enum, or "?" when out of range. */
const char *cfg_enum_name(const cfg_enum_desc_t *e, int v);

#endif
