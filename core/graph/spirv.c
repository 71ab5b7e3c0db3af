/*
 * SPIR-V reflection for custom kernels: the module's words read directly
 * (no SPIRV-Reflect), only as far as the contract of <vpeft/kernel.h>
 * needs: the descriptor set and binding of every storage buffer, the size
 * of the push-constant block, and where the local size comes from. A
 * shader that does not fit its descriptor would otherwise register and
 * then read undefined push constants, leave an output unwritten, or bind
 * past the pipeline layout (which only the validation layer reports,
 * without the kernel's name, before the driver crashes).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "graph/spirv.h"
#include "util/error.h"

/* Opcodes, decorations and enumerants of the SPIR-V 1.x specification. */
enum {
    OP_EXECUTION_MODE = 16, OP_TYPE_BOOL = 20, OP_TYPE_INT = 21, OP_TYPE_FLOAT = 22,
    OP_TYPE_VECTOR = 23, OP_TYPE_MATRIX = 24, OP_TYPE_ARRAY = 28, OP_TYPE_RUNTIME_ARRAY = 29,
    OP_TYPE_STRUCT = 30, OP_TYPE_POINTER = 32, OP_CONSTANT = 43, OP_CONSTANT_COMPOSITE = 44,
    OP_SPEC_CONSTANT = 50, OP_SPEC_CONSTANT_COMPOSITE = 51, OP_VARIABLE = 59,
    OP_DECORATE = 71, OP_MEMBER_DECORATE = 72, OP_EXECUTION_MODE_ID = 331,
    DEC_SPEC_ID = 1, DEC_BUFFER_BLOCK = 3, DEC_ARRAY_STRIDE = 6, DEC_MATRIX_STRIDE = 7,
    DEC_BUILTIN = 11, DEC_BINDING = 33, DEC_DESCRIPTOR_SET = 34, DEC_OFFSET = 35,
    BUILTIN_WORKGROUP_SIZE = 25, MODE_LOCAL_SIZE = 17, MODE_LOCAL_SIZE_ID = 38,
    SC_UNIFORM = 2, SC_PUSH_CONSTANT = 9, SC_STORAGE_BUFFER = 12,
};

#define MAX_BOUND (1u << 22) /* ids; far beyond any compute kernel */

typedef struct {
    size_t def;          /* word index of the defining instruction; 0: none seen */
    int64_t set, binding, spec_id, builtin, array_stride;
    bool buffer_block;
} id_info;

typedef struct {
    const uint32_t *w;
    size_t words;
    uint32_t bound;
    id_info *id;
    const char *name;
} module;

static uint32_t op_of(const module *m, size_t at) { return m->w[at] & 0xffffu; }

static const id_info *info(const module *m, uint32_t id)
{
    static const id_info none = {0, -1, -1, -1, -1, -1, false};
    return id < m->bound && m->id[id].def ? &m->id[id] : &none;
}

static vp_status bad(const module *m, size_t at)
{
    return vp_error_set(VP_ERR_INVALID, "custom kernel %s: malformed SPIR-V at word %zu",
                        m->name, at);
}

/* Decorations and the defining instruction of every id of interest. */
static vp_status scan(module *m)
{
    for (size_t at = 5; at < m->words;) {
        uint32_t wc = m->w[at] >> 16, op = op_of(m, at);
        if (!wc || wc > m->words - at)
            return bad(m, at);
        const uint32_t *w = m->w + at;
        uint32_t result = 0;
        switch (op) {
        case OP_TYPE_BOOL: case OP_TYPE_INT: case OP_TYPE_FLOAT: case OP_TYPE_VECTOR:
        case OP_TYPE_MATRIX: case OP_TYPE_ARRAY: case OP_TYPE_RUNTIME_ARRAY:
        case OP_TYPE_STRUCT: case OP_TYPE_POINTER:
            result = wc >= 2 ? w[1] : 0;
            break;
        case OP_CONSTANT: case OP_CONSTANT_COMPOSITE: case OP_SPEC_CONSTANT:
        case OP_SPEC_CONSTANT_COMPOSITE: case OP_VARIABLE:
            result = wc >= 3 ? w[2] : 0;
            break;
        case OP_DECORATE:
            if (wc < 3 || w[1] >= m->bound)
                return bad(m, at);
            id_info *t = &m->id[w[1]];
            if (w[2] == DEC_BUFFER_BLOCK)
                t->buffer_block = true;
            else if (wc >= 4 && w[2] == DEC_DESCRIPTOR_SET)
                t->set = w[3];
            else if (wc >= 4 && w[2] == DEC_BINDING)
                t->binding = w[3];
            else if (wc >= 4 && w[2] == DEC_SPEC_ID)
                t->spec_id = w[3];
            else if (wc >= 4 && w[2] == DEC_BUILTIN)
                t->builtin = w[3];
            else if (wc >= 4 && w[2] == DEC_ARRAY_STRIDE)
                t->array_stride = w[3];
            break;
        default:
            break;
        }
        if (result) {
            if (result >= m->bound)
                return bad(m, at);
            m->id[result].def = at;
        }
        at += wc;
    }
    return VP_OK;
}

/* The bytes a value of type id takes in a push-constant block (offsets
 * and strides as decorated; the std430 sizes glslang emits them for). */
static vp_status type_size(const module *m, uint32_t id, int depth, uint64_t *out);

static vp_status struct_size(const module *m, size_t def, int depth, uint64_t *out)
{
    const uint32_t *w = m->w + def;
    uint32_t n = (w[0] >> 16) - 2, sid = w[1];
    uint64_t end = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t offset = -1, mstride = -1;
        for (size_t at = 5; at < m->words; at += m->w[at] >> 16)
            if (op_of(m, at) == OP_MEMBER_DECORATE && (m->w[at] >> 16) >= 5 &&
                m->w[at + 1] == sid && m->w[at + 2] == i) {
                if (m->w[at + 3] == DEC_OFFSET)
                    offset = m->w[at + 4];
                else if (m->w[at + 3] == DEC_MATRIX_STRIDE)
                    mstride = m->w[at + 4];
            }
        uint64_t size;
        const id_info *t = info(m, w[2 + i]);
        if (mstride >= 0 && t->def && op_of(m, t->def) == OP_TYPE_MATRIX)
            size = (uint64_t)m->w[t->def + 3] * (uint64_t)mstride;
        else {
            vp_status st = type_size(m, w[2 + i], depth + 1, &size);
            if (st)
                return st;
        }
        uint64_t at_ = offset >= 0 ? (uint64_t)offset : end;
        if (at_ + size > end)
            end = at_ + size;
    }
    *out = end;
    return VP_OK;
}

static vp_status type_size(const module *m, uint32_t id, int depth, uint64_t *out)
{
    const id_info *t = info(m, id);
    if (!t->def || depth > 16)
        return bad(m, t->def);
    const uint32_t *w = m->w + t->def;
    uint32_t wc = w[0] >> 16;
    uint64_t elem;
    vp_status st;
    switch (op_of(m, t->def)) {
    case OP_TYPE_BOOL:
        *out = 4;
        return VP_OK;
    case OP_TYPE_INT: case OP_TYPE_FLOAT:
        if (wc < 3)
            return bad(m, t->def);
        *out = w[2] / 8;
        return VP_OK;
    case OP_TYPE_VECTOR: case OP_TYPE_MATRIX:
        if (wc < 4)
            return bad(m, t->def);
        if ((st = type_size(m, w[2], depth + 1, &elem)))
            return st;
        *out = elem * w[3];
        return VP_OK;
    case OP_TYPE_ARRAY: {
        const id_info *len = info(m, wc >= 4 ? w[3] : 0);
        if (wc < 4 || !len->def || op_of(m, len->def) != OP_CONSTANT)
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the push-constant block "
                                "holds an array whose length is not a constant", m->name);
        if ((st = type_size(m, w[2], depth + 1, &elem)))
            return st;
        uint64_t stride = t->array_stride >= 0 ? (uint64_t)t->array_stride : elem;
        *out = stride * m->w[len->def + 3];
        return VP_OK;
    }
    case OP_TYPE_STRUCT:
        return struct_size(m, t->def, depth, out);
    default:
        return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the push-constant block holds a "
                            "type vpeft cannot size (opcode %u)", m->name, op_of(m, t->def));
    }
}

/* The pointee of variable v's pointer type, and the variable's class. */
static uint32_t pointee(const module *m, const uint32_t *v)
{
    const id_info *p = info(m, v[1]);
    if (!p->def || op_of(m, p->def) != OP_TYPE_POINTER || (m->w[p->def] >> 16) < 4)
        return 0;
    return m->w[p->def + 3];
}

static vp_status check_resources(const module *m, const vp_kernel_desc *d)
{
    bool seen[32] = {false};
    for (size_t at = 5; at < m->words; at += m->w[at] >> 16) {
        if (op_of(m, at) != OP_VARIABLE || (m->w[at] >> 16) < 4)
            continue;
        const uint32_t *v = m->w + at;
        const id_info *vi = info(m, v[2]);
        uint32_t type = pointee(m, v);
        if (!type)
            return bad(m, at);
        if (v[3] == SC_PUSH_CONSTANT) {
            uint64_t size;
            vp_status st = type_size(m, type, 0, &size);
            if (st)
                return st;
            if (size > d->push_size)
                return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the shader's push-constant "
                                    "block is %llu bytes, the descriptor's push_size is %u",
                                    m->name, (unsigned long long)size, d->push_size);
            continue;
        }
        if (vi->set < 0 && vi->binding < 0)
            continue;
        int64_t set = vi->set < 0 ? 0 : vi->set, binding = vi->binding < 0 ? 0 : vi->binding;
        if (set != 0)
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the shader binds a buffer in "
                                "descriptor set %lld (binding %lld); vpeft binds set 0 only",
                                m->name, (long long)set, (long long)binding);
        if (binding >= d->n_bindings)
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the shader binds a buffer at "
                                "binding %lld, the descriptor has %u bindings (0 to %u)", m->name,
                                (long long)binding, d->n_bindings, d->n_bindings - 1);
        bool storage = v[3] == SC_STORAGE_BUFFER ||
                       (v[3] == SC_UNIFORM && info(m, type)->buffer_block);
        if (!storage)
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: binding %lld is not a storage "
                                "buffer (vpeft binds storage buffers only)", m->name,
                                (long long)binding);
        seen[binding] = true;
    }
    for (uint32_t i = 0; i < d->n_bindings; i++)
        if (!seen[i])
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the descriptor has %u bindings "
                                "but the shader has no storage buffer at binding %u", m->name,
                                d->n_bindings, i);
    return VP_OK;
}

/* Component i of the local size, given by constant id (ids: the
 * WorkgroupSize builtin or LocalSizeId) or by a literal. */
static vp_status check_local_one(const module *m, const vp_kernel_desc *d, int i, bool by_id,
                                 uint32_t v)
{
    static const char axis[] = "xyz";
    if (by_id) {
        const id_info *c = info(m, v);
        if (!c->def)
            return bad(m, 0);
        uint32_t op = op_of(m, c->def);
        if (op == OP_SPEC_CONSTANT && c->spec_id == i)
            return VP_OK;
        if (op == OP_SPEC_CONSTANT && c->spec_id >= 0)
            return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the local size's %c is "
                                "specialization constant %lld, vpeft sets it as constant %d",
                                m->name, axis[i], (long long)c->spec_id, i);
        if ((op != OP_CONSTANT && op != OP_SPEC_CONSTANT) || (m->w[c->def] >> 16) < 4)
            return bad(m, c->def);
        v = m->w[c->def + 3];
    }
    if (v != d->local_size[i])
        return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the local size's %c is fixed at %u "
                            "in the shader, the descriptor says %u (use local_size_%c_id = %d)",
                            m->name, axis[i], v, d->local_size[i], axis[i], i);
    return VP_OK;
}

static vp_status check_local(const module *m, const vp_kernel_desc *d)
{
    const uint32_t *lits = NULL, *ids = NULL;
    for (size_t at = 5; at < m->words; at += m->w[at] >> 16) {
        uint32_t op = op_of(m, at), wc = m->w[at] >> 16;
        if ((op == OP_EXECUTION_MODE || op == OP_EXECUTION_MODE_ID) && wc >= 6) {
            if (m->w[at + 2] == MODE_LOCAL_SIZE)
                lits = m->w + at + 3;
            else if (m->w[at + 2] == MODE_LOCAL_SIZE_ID)
                ids = m->w + at + 3;
        }
    }
    /* The WorkgroupSize builtin overrides the execution mode (glslang's
     * local_size_x_id emits both). */
    for (uint32_t id = 1; id < m->bound; id++) {
        const id_info *c = &m->id[id];
        if (!c->def || c->builtin != BUILTIN_WORKGROUP_SIZE)
            continue;
        uint32_t op = op_of(m, c->def);
        if ((op != OP_SPEC_CONSTANT_COMPOSITE && op != OP_CONSTANT_COMPOSITE) ||
            (m->w[c->def] >> 16) < 6)
            return bad(m, c->def);
        for (int i = 0; i < 3; i++) {
            vp_status st = check_local_one(m, d, i, true, m->w[c->def + 3 + i]);
            if (st)
                return st;
        }
        return VP_OK;
    }
    if (!lits && !ids)
        return vp_error_set(VP_ERR_INVALID, "custom kernel %s: the shader declares no local size",
                            m->name);
    for (int i = 0; i < 3; i++) {
        vp_status st = check_local_one(m, d, i, ids != NULL, ids ? ids[i] : lits[i]);
        if (st)
            return st;
    }
    return VP_OK;
}

vp_status vp_spirv_check(const uint32_t *code, size_t words, const vp_kernel_desc *d,
                         const char *name)
{
    module m = {code, words, words > 3 ? code[3] : 0, NULL, name};
    if (words < 5 || !m.bound || m.bound > MAX_BOUND)
        return vp_error_set(VP_ERR_INVALID, "custom kernel %s: malformed SPIR-V header (id bound "
                            "%u)", name, m.bound);
    m.id = calloc(m.bound, sizeof *m.id);
    if (!m.id)
        return vp_error_set(VP_ERR_NOMEM, "custom kernel %s: out of host memory", name);
    for (uint32_t i = 0; i < m.bound; i++)
        m.id[i] = (id_info){0, -1, -1, -1, -1, -1, false};
    vp_status st = scan(&m);
    if (!st)
        st = check_resources(&m, d);
    if (!st)
        st = check_local(&m, d);
    free(m.id);
    return st;
}
