/* Field descriptor tables of the config model, expanded from the .def files. */
#include "config_types.h"

#define CFG_FK_STR CFG_K_STR
#define CFG_FK_BOOL CFG_K_BOOL
#define CFG_FK_I32 CFG_K_I32
#define CFG_FK_U32 CFG_K_U32
#define CFG_FK_I64 CFG_K_I64
#define CFG_FK_DBL CFG_K_DBL
#define CFG_FK_DUR CFG_K_DUR
#define CFG_FK_ENUM CFG_K_ENUM
#define CFG_FK_MSG CFG_K_MSG
#define CFG_FK_RAW CFG_K_RAW
#define CFG_FK_STRS CFG_K_STRS
#define CFG_FK_U32S CFG_K_U32S
#define CFG_FK_MSGS CFG_K_MSGS
#define CFG_FK_STRMAP CFG_K_STRMAP
#define CFG_FK_MSGMAP CFG_K_MSGMAP
#define CFG_FK_U32MAP CFG_K_U32MAP
#define CFG_FK_INTSTR CFG_K_INTSTR

#define CFG_SUBMSG_STR(sub) NULL
#define CFG_SUBMSG_BOOL(sub) NULL
#define CFG_SUBMSG_I32(sub) NULL
#define CFG_SUBMSG_U32(sub) NULL
#define CFG_SUBMSG_I64(sub) NULL
#define CFG_SUBMSG_DBL(sub) NULL
#define CFG_SUBMSG_DUR(sub) NULL
#define CFG_SUBMSG_ENUM(sub) NULL
#define CFG_SUBMSG_MSG(sub) &cfg_##sub##_desc
#define CFG_SUBMSG_RAW(sub) NULL
#define CFG_SUBMSG_STRS(sub) NULL
#define CFG_SUBMSG_U32S(sub) NULL
#define CFG_SUBMSG_MSGS(sub) &cfg_##sub##_desc
#define CFG_SUBMSG_STRMAP(sub) NULL
#define CFG_SUBMSG_MSGMAP(sub) &cfg_##sub##_desc
#define CFG_SUBMSG_U32MAP(sub) NULL
#define CFG_SUBMSG_INTSTR(sub) NULL

#define CFG_SUBENUM_STR(sub) NULL
#define CFG_SUBENUM_BOOL(sub) NULL
#define CFG_SUBENUM_I32(sub) NULL
#define CFG_SUBENUM_U32(sub) NULL
#define CFG_SUBENUM_I64(sub) NULL
#define CFG_SUBENUM_DBL(sub) NULL
#define CFG_SUBENUM_DUR(sub) NULL
#define CFG_SUBENUM_ENUM(sub) &cfg_enum_##sub
#define CFG_SUBENUM_MSG(sub) NULL
#define CFG_SUBENUM_RAW(sub) NULL
#define CFG_SUBENUM_STRS(sub) NULL
#define CFG_SUBENUM_U32S(sub) NULL
#define CFG_SUBENUM_MSGS(sub) NULL
#define CFG_SUBENUM_STRMAP(sub) NULL
#define CFG_SUBENUM_MSGMAP(sub) NULL
#define CFG_SUBENUM_U32MAP(sub) NULL
#define CFG_SUBENUM_INTSTR(sub) NULL

#define CFG_X_FIELD_DESC(M, fname, kind, sub, flags, doc)                                          \
    {#fname,       CFG_FK_##kind,       (uint8_t)(flags), (uint16_t)offsetof(struct cfg_##M, fname), \
     CFG_SUBMSG_##kind(sub), CFG_SUBENUM_##kind(sub), doc},

#define CFG_X_DESC(M, mflags)                                                                      \
    _Static_assert(cfg_##M##__nfields <= 64, #M ": more than 64 fields");                          \
    _Static_assert(sizeof(struct cfg_##M) < 65536, #M ": too large");                              \
    static const cfg_field_t cfg_##M##_fields[] = {CFG_MSG_##M(CFG_X_FIELD_DESC, M){NULL, 0, 0, 0, NULL, NULL, NULL}}; \
    const cfg_desc_t cfg_##M##_desc = {#M, sizeof(struct cfg_##M), (mflags), cfg_##M##__nfields, cfg_##M##_fields};

CFG_ALL_MESSAGES(CFG_X_DESC)

#define CFG_X_ENUM_NAME(E, v) #v,
#define CFG_X_ENUM_DESC(E)                                                                         \
    static const char *const cfg_##E##_names[] = {CFG_ENUM_##E(CFG_X_ENUM_NAME, E) NULL};         \
    const cfg_enum_desc_t cfg_enum_##E = {#E, cfg_##E##_names, cfg_##E##__count};

CFG_ALL_ENUMS(CFG_X_ENUM_DESC)

const char *cfg_enum_name(const cfg_enum_desc_t *e, int v)
{
    if (v < 0 || (uint32_t)v >= e->count)
        return "?";
    return e->values[v];
}
