/*
 * vpeft/config.h - a plugin's part of the user's JSON config, read through
 * the host's accessors (vpeft/host.h) without seeing the JSON library.
 *
 *     // cfg is { "r": 8, "lora_alpha": 16, "target_modules": ["*.qkv"] }
 *     static const char *const known[] = {"plugin", "r", "lora_alpha", "target_modules"};
 *     int64_t r;
 *     vp_status st = H->cfg_check_keys(cfg, known, 4);     // "lora_alhpa": did you mean ...?
 *     if (!st) st = H->cfg_int(cfg, "r", 8, &r);           // absent: 8
 *     if (!st && r <= 0) st = H->cfg_fail(cfg, "r", "must be at least 1, got %lld", (long long)r);
 *
 * Every accessor that fails leaves a one-line message naming the config
 * file and the full key path ("run.json: peft[0].r: expected an integer,
 * got a string") and returns VP_ERR_CONFIG. A vp_config is owned by the
 * host and valid until the plugin instance it was given to is destroyed;
 * so are the strings the accessors return.
 */
#ifndef VPEFT_CONFIG_H
#define VPEFT_CONFIG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vp_config vp_config; /* one JSON value with its file and path (opaque) */

typedef enum vp_cfg_type {
    VP_CFG_ABSENT = 0, /* no such key (or a NULL config) */
    VP_CFG_NULL = 1,
    VP_CFG_BOOL = 2,
    VP_CFG_NUMBER = 3,
    VP_CFG_STRING = 4,
    VP_CFG_ARRAY = 5,
    VP_CFG_OBJECT = 6
} vp_cfg_type;

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_CONFIG_H */
