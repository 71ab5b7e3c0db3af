/*
 * Site selectors behind the host table's selector_* members (see select.c
 * for the matching rules, <vpeft/host.h> for the contract).
 */
#ifndef VP_MODEL_SELECT_H
#define VP_MODEL_SELECT_H

#include <vpeft/host.h>

vp_status vp_selector_create(const vp_config *c, const char *key, const char *const *defaults,
                             uint32_t n, vp_selector **out);
bool vp_selector_match(const vp_selector *s, const char *path);
void vp_selector_destroy(vp_selector *s);

/* For a PEFT config entry with HF PEFT's target_modules (a LoRA-style
 * method): VP_ERR_CONFIG naming the entry's key when a target in HF's form
 * (a name, or a regex) selects a module of b's base model that HF PEFT's
 * LoRA would adapt (a Linear, Embedding, Conv or MultiheadAttention, known
 * by a "<m>.weight" of 2+ dimensions or "<m>.in_proj_weight") but that is
 * not a linear site, so that vpeft does not silently adapt less; and when
 * a target in any form but "all-linear" selects the out_proj of a packed
 * MultiheadAttention, which HF PEFT's LoRA cannot change (and vpeft's lora
 * skips). Globs and "all-linear" are otherwise vpeft's own forms. */
struct vp_build;
vp_status vp_selector_check_modules(const vp_config *entry, const struct vp_build *b);

#endif
