/*
 * swin.h - what the files of the `swin` backbone plugin share: the parsed
 * config (config.c), one build's context (build.c) and the window layout
 * helpers (window.c). Nothing here leaves the plugin (hidden visibility).
 */
#ifndef SWIN_SWIN_H
#define SWIN_SWIN_H

#include <stdbool.h>
#include <stdint.h>

#include <vpeft/vpeft.h>

/* The host's function table, from init() until the library is unloaded. */
extern const vp_host_api *swin_H;

enum {
    SWIN_MAX_STAGES = VP_MAX_LEVELS, /* one feature level per stage */
    SWIN_NAME_LEN = 192,             /* parameter, site and key names */
    SWIN_MAX_ZEROS = 48              /* distinct zero-padding shapes of one build */
};

/* HF's layer norms without an eps argument (nn.LayerNorm's default): the
 * patch embedding's, patch merging's and the stage outputs' norms. Only the
 * blocks' layernorm_before/after use config.layer_norm_eps. */
#define SWIN_TORCH_LN_EPS 1e-5f

typedef struct swin {
    int64_t image[2];                  /* input height, width in pixels */
    int64_t patch, channels, embed_dim, window;
    int n_stages;
    int64_t depths[SWIN_MAX_STAGES], heads[SWIN_MAX_STAGES];
    int64_t mlp[SWIN_MAX_STAGES];      /* int(mlp_ratio * dim), per stage */
    bool qkv_bias;
    float eps;                         /* layer_norm_eps: the blocks' norms */
    float init_std;                    /* initializer_range */
    float hidden_drop, attn_drop;      /* hidden_dropout_prob, attention_probs_dropout_prob */
    float drop_path;                   /* drop_path_rate: the last block's stochastic depth */
    bool m2f_names;                    /* "names": "mask2former" */
    bool hidden_states;                /* "output_hidden_states": name HF's hidden_states */
    const char *weights;               /* resolved path (the host's string) or NULL */
    /* Where detectron2's D2SwinTransformer ("detectron2") differs from HF's
     * SwinBackbone; the HF modes have the values in brackets. */
    bool d2;                           /* detectron2's names, the packed qkv [false] */
    float qk_scale;                    /* QK_SCALE; 0: head_dim^-0.5 (Python's `or`) [0] */
    bool patch_norm;                   /* PATCH_NORM: the patch embedding's norm [true] */
    float proj_drop;                   /* dropout after the attention's projection
                                        * (DROP_RATE) [attention_probs_dropout_prob] */
    float mlp_drop;                    /* dropout after the MLP's GELU (DROP_RATE) [0] */
    bool drop_path_mlp;                /* stochastic depth on the MLP branch too [false] */
    uint32_t out_stages;               /* bit i: stage i is a feature level (OUT_FEATURES)
                                        * [every stage] */
} swin;

/* Stage i's width: embed_dim * 2^i. */
static inline int64_t swin_dim(const swin *m, int i) { return m->embed_dim << i; }

/* The module paths of one naming scheme (HF's SwinBackbone or detectron2's
 * D2SwinTransformer), relative to the build's prefix: "%d" a stage, then a
 * block. */
typedef struct swin_names {
    const char *proj, *embed_norm;          /* the patch embedding's conv and its norm */
    const char *block;                      /* a block; the rest of the block's are under it */
    const char *norm1, *norm2, *table, *index, *attn_proj, *attn, *fc1, *fc2, *ffn;
    const char *merge_norm, *merge_red;     /* patch merging of a stage */
    const char *stage_norm;                 /* a stage output's norm, numbered from */
    int stage_norm_base;                    /* this for stage 0 */
} swin_names;

/* One build. */
typedef struct swin_build {
    const swin *m;
    const swin_names *nm;
    vp_build *b;
    vp_graph *g;
    int64_t batch;
    const char *pfx;        /* names of parameters and sites: "backbone." or
                             * "model.pixel_level_module.encoder." */
    vp_weights *w;          /* the plugin's own weights file, or NULL */
    const char *fpfx;       /* how that file prefixes HF's SwinBackbone keys */
    uint32_t n_keys;
    bool *used;             /* per tensor of w */
    bool file_norms;        /* w holds hidden_states_norms.* */
    vp_gt *rel_index;       /* (w^2 * w^2) int32: HF's relative_position_index */
    struct {
        int ndim;
        int64_t shape[VP_MAX_DIMS];
        vp_gt *t;
    } zero[SWIN_MAX_ZEROS];
    int n_zero, n_const;
    vp_status st;           /* our own first failure (the graph keeps its own) */
} swin_build;

static inline bool swin_failed(const swin_build *c)
{
    return c->st || swin_H->graph_status(c->g);
}

/* ---- window.c ---------------------------------------------------------------- */

/* x (..4 dims) along axis as the sequence padded[(i + s) mod Lp], i < Lp,
 * where padded is x followed by Lp - L zeros (L its length there): HF's
 * right/bottom zero padding followed by torch.roll(shifts=-s), one concat. */
vp_gt *swin_pad_roll(swin_build *c, vp_gt *x, int axis, int64_t Lp, int64_t s);
/* x (B, H, W, C) -> windows (B * nW, w*w, C): padded to multiples of w,
 * rolled by -s on both axes, partitioned (HF's maybe_pad, torch.roll,
 * window_partition). */
vp_gt *swin_window_in(swin_build *c, vp_gt *x, int64_t w, int64_t s);
/* The inverse: windows (B * nW, w*w, C) -> (B, H, W, C) (window_reverse,
 * torch.roll(+s), the crop to H x W). */
vp_gt *swin_window_out(swin_build *c, vp_gt *y, int64_t H, int64_t W, int64_t w, int64_t s);
/* HF's relative_position_index for window w as an int32 constant (w^4). */
vp_gt *swin_rel_index(swin_build *c, int64_t w);
/* The shifted windows' additive mask of stage i (HF's get_attn_mask: -100
 * between tokens of different regions, else 0) for a map padded to
 * Hp x Wp, tiled over the heads: (nW, heads, w^2, w^2). */
vp_gt *swin_shift_mask(swin_build *c, int stage, int64_t Hp, int64_t Wp, int64_t w, int64_t s,
                       int64_t heads);
/* HF's SwinPatchMerging concatenation: x (B, H, W, C) -> (B, ceil(H/2),
 * ceil(W/2), 4C) in the channel order [x(0::2, 0::2), x(1::2, 0::2),
 * x(0::2, 1::2), x(1::2, 1::2)], odd sides zero-padded first. */
vp_gt *swin_merge_gather(swin_build *c, vp_gt *x);

/* ---- config.c ---------------------------------------------------------------- */

vp_status swin_create(const vp_config *cfg, void **self);
void swin_destroy(void *self);
vp_status swin_input_size(void *self, int64_t chw[3]);

/* ---- build.c ----------------------------------------------------------------- */

vp_status swin_build_fn(void *self, vp_build *b, vp_gt *image, vp_features *out);

#endif
