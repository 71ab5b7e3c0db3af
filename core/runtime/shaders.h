/*
 * The table of SPIR-V modules compiled from shaders/<name>.comp at build
 * time.
 * The definitions are generated into the build tree (obj/shaders.c).
 */
#ifndef VP_RUNTIME_SHADERS_H
#define VP_RUNTIME_SHADERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct vp_shader_entry {
    const char *name;        /* file stem: "matmul" for shaders/matmul.comp */
    const uint32_t *code;
    size_t bytes;
} vp_shader_entry;

extern const vp_shader_entry vp_shader_table[];
extern const unsigned vp_shader_table_n;

#endif
