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

#endif
