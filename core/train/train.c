/*
 * The training loop (train.h): batches from the loader's host thread into
 * the model's inputs, one recorded graph run per batch, AdamW after every
 * `accum` runs, progress, checkpoints and evaluations.
 *
 * Resuming repeats an uninterrupted run exactly because everything a step
 * depends on is either in the checkpoint (trainable parameters, AdamW
 * moments, dropout's device seed, the step) or a function of the step
 * (the learning rate, and the loader's batch k = step * accum + run, which
 * depends on (seed, k) only), and because the graph is built deterministic
 * (no float atomics).
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "data/data.h"
#include "dist/dist.h"
#include "io/safetensors.h"
#include "train/train.h"
#include "util/error.h"
#include "util/file.h"
#include "util/log.h"
#include "util/clock.h"

#define CKPT_NAME "checkpoint.safetensors"


/* ---- the model's inputs --------------------------------------------------- */

typedef struct io_set {
    vp_gt *image, *labels, *masks, *instances, *loss, *terms[3];
    int64_t size, T, hm, wm;
} io_set;

static vp_status find_io(const vp_model *m, int64_t batch, io_set *io)
{
    vp_graph *g = vp_model_graph(m);
    memset(io, 0, sizeof *io);
    io->image = vp_model_image(m);
    io->labels = vp_graph_find(g, "target.labels");
    io->masks = vp_graph_find(g, "target.masks");
    io->instances = vp_graph_find(g, "target.instances"); /* optional (docs/distributed.md) */
    io->loss = vp_model_loss(m);
    static const char *const terms[3] = {"loss.class", "loss.mask", "loss.dice"};
    for (int i = 0; i < 3; i++)
        io->terms[i] = vp_model_output(m, terms[i]);
    vp_gt *maps[VP_MAX_LEVELS];
    uint32_t nf = vp_model_features(m, maps);
    if (!io->image || !io->labels || !io->masks || !nf)
        return vp_error_set(VP_ERR_INVALID, "the head (%s) has no target.labels and "
                            "target.masks inputs: vpeft trains instance-segmentation heads",
                            vp_model_plugin_name(m, VP_PLUGIN_HEAD));
    const int64_t *is = vp_gt_shape(io->image), *ls = vp_gt_shape(io->labels),
                  *ms = vp_gt_shape(io->masks), *fs = vp_gt_shape(maps[0]);
    io->size = is[2];
    io->T = ls[1];
    /* (B, T, H, W): the head's own target resolution; (B, T, H * W): the
     * finest feature map's */
    bool own = vp_gt_ndim(io->masks) == 4;
    io->hm = own ? ms[2] : fs[1];
    io->wm = own ? ms[3] : fs[2];
    if (is[0] != batch || is[2] != is[3] || (!own && ms[2] != io->hm * io->wm) ||
        io->size % io->hm || io->size % io->wm)
        return vp_error_set(VP_ERR_SHAPE, "the model's inputs do not have the shapes the "
                            "trainer expects: an image of %lldx%lld and target masks of %lldx%lld "
                            "(it needs a square image, masks at the finest feature map or "
                            "(B, T, H, W) at a resolution dividing the image; a Swin backbone: "
                            "model.image a multiple of 32)", (long long)is[2], (long long)is[3],
                            (long long)io->hm, (long long)io->wm);
    return VP_OK;
}

/* The batch's instances (labels of filled slots). */
static double count_instances(const io_set *io, const vp_batch *b, int64_t batch)
{
    int64_t n = 0;
    for (int64_t i = 0; i < batch * io->T; i++)
        n += b->labels[i] >= 0;
    return (double)n;
}

/* instances: the global batch's instances per rank, which the head's loss
 * is normalized by. */
static vp_status feed(vp_graph *g, const io_set *io, const vp_batch *b, int64_t batch,
                      double instances)
{
    size_t px = (size_t)(batch * 3 * io->size * io->size) * sizeof(float);
    size_t lb = (size_t)(batch * io->T) * sizeof(int32_t);
    size_t mk = (size_t)(batch * io->T * io->hm * io->wm) * sizeof(float);
    vp_status st = vp_graph_write(g, io->image, b->pixels, px);
    if (!st && io->labels)
        st = vp_graph_write(g, io->labels, b->labels, lb);
    if (!st && io->masks)
        st = vp_graph_write(g, io->masks, b->masks, mk);
    float inst = (float)instances;
    if (!st && io->instances)
        st = vp_graph_write(g, io->instances, &inst, sizeof inst);
    return st;
}

/* ---- checkpoints ------------------------------------------------------------- */

static char *section_json(const vp_config *root, const char *key)
{
    const vp_config *c = vp_cfg_get(root, key);
    return c ? vp_cfg_to_json(c) : strdup("null");
}

/* What must not change between a run and its resumption. */
static char *fingerprint(const vp_config *root, const vp_train_cfg *tc)
{
    char *model = section_json(root, "model"), *peft = section_json(root, "peft");
    size_t n = (model ? strlen(model) : 0) + (peft ? strlen(peft) : 0) + 256;
    char *s = malloc(n);
    if (s && model && peft)
        snprintf(s, n, "{\"model\":%s,\"peft\":%s,\"batch\":%lld,\"accum\":%lld,\"seed\":%lld}",
                 model, peft, (long long)tc->batch, (long long)tc->accum, (long long)tc->seed);
    else {
        free(s);
        s = NULL;
    }
    free(model);
    free(peft);
    return s;
}

/* seconds: the training time up to step, over every call that ran a part
 * of the run (metrics.json's train_seconds). */
static vp_status save_checkpoint(vp_model *m, const char *path, int64_t step, const char *fp,
                                 double seconds)
{
    vp_graph *g = vp_model_graph(m);
    const vp_build *b = vp_model_build(m);
    uint32_t np = vp_build_param_count(b), ne = 0;
    uint64_t nopt = vp_graph_optim_len(g);
    vp_st_entry *e = calloc((size_t)np + 2, sizeof *e);
    float **bufs = calloc((size_t)np + 2, sizeof *bufs);
    vp_status st = e && bufs ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; !st && i < np; i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        if (!vp_gt_trainable(t))
            continue;
        size_t k = (size_t)vp_gt_nelem(t);
        if (!(bufs[ne] = malloc(k * sizeof(float))))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!st)
            st = vp_graph_read(g, t, bufs[ne], k * sizeof(float));
        e[ne] = (vp_st_entry){vp_gt_name(t), VP_ST_F32, vp_gt_ndim(t), vp_gt_shape(t), bufs[ne]};
        ne++;
    }
    int64_t optshape[1] = {(int64_t)nopt};
    if (!st && nopt) {
        bufs[ne] = malloc(nopt * sizeof(float));
        bufs[ne + 1] = malloc(nopt * sizeof(float));
        if (!bufs[ne] || !bufs[ne + 1])
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!st)
            st = vp_graph_optim_read(g, bufs[ne], bufs[ne + 1], nopt);
        e[ne] = (vp_st_entry){"vpeft.adamw.m", VP_ST_F32, 1, optshape, bufs[ne]};
        e[ne + 1] = (vp_st_entry){"vpeft.adamw.v", VP_ST_F32, 1, optshape, bufs[ne + 1]};
        ne += 2;
    }
    uint32_t seed = 0;
    if (!st)
        st = vp_graph_seed_read(g, &seed);
    char sstep[32], sseed[32], ssec[32];
    snprintf(sstep, sizeof sstep, "%lld", (long long)step);
    snprintf(sseed, sizeof sseed, "%u", seed);
    snprintf(ssec, sizeof ssec, "%.3f", seconds);
    vp_st_kv kv[4] = {{"vpeft.step", sstep}, {"vpeft.dropout_seed", sseed},
                      {"vpeft.run", fp}, {"vpeft.train_seconds", ssec}};
    if (!st)
        st = vp_st_write(path, e, ne, kv, 4);
    for (uint32_t i = 0; bufs && i < np + 2; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
    return st;
}

/* *seconds: the training time up to the checkpoint (0 when an older vpeft
 * wrote it). */
static vp_status load_checkpoint(vp_model *m, const char *path, const char *fp, int64_t *step,
                                 double *seconds)
{
    vp_graph *g = vp_model_graph(m);
    const vp_build *b = vp_model_build(m);
    vp_st *f;
    vp_status st = vp_st_open(path, &f);
    if (st)
        return st;
    const char *ss = vp_st_meta(f, "vpeft.step"), *sd = vp_st_meta(f, "vpeft.dropout_seed"),
               *run = vp_st_meta(f, "vpeft.run");
    char *end = NULL;
    long long s = ss ? strtoll(ss, &end, 10) : -1;
    if (!ss || !sd || !run || *end || s < 0)
        st = vp_error_set(VP_ERR_FORMAT, "%s: not a vpeft checkpoint (no step, seed or run "
                          "metadata)", path);
    if (!st && strcmp(run, fp))
        st = vp_error_set(VP_ERR_CONFIG, "%s: written by a run with another model, peft, "
                          "train.batch, train.accum or train.seed: resuming it would not "
                          "continue that run", path);
    /* the trainable parameters: every one must be there */
    uint32_t want = 0, got = 0;
    for (uint32_t i = 0; i < vp_build_param_count(b); i++)
        want += vp_gt_trainable(vp_build_param_at(b, i)->t);
    if (!st)
        st = vp_model_load_params(m, path, &got);
    if (!st && got != want)
        st = vp_error_set(VP_ERR_FORMAT, "%s: holds %u of the run's %u trainable parameters",
                          path, got, want);
    uint64_t nopt = vp_graph_optim_len(g);
    float *mv = !st && nopt ? malloc(2 * nopt * sizeof *mv) : NULL;
    if (!st && nopt && !mv)
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if (!st && nopt)
        st = vp_st_read_f32(f, "vpeft.adamw.m", mv, nopt);
    if (!st && nopt)
        st = vp_st_read_f32(f, "vpeft.adamw.v", mv + nopt, nopt);
    if (!st && nopt && !(st = vp_build_check_finite(path, "vpeft.adamw.m", mv, nopt)))
        st = vp_build_check_finite(path, "vpeft.adamw.v", mv + nopt, nopt);
    if (!st && nopt)
        st = vp_graph_optim_write(g, mv, mv + nopt, nopt);
    free(mv);
    if (!st)
        st = vp_graph_seed_write(g, (uint32_t)strtoul(sd, NULL, 10));
    const char *sec = vp_st_meta(f, "vpeft.train_seconds");
    *seconds = sec ? strtod(sec, NULL) : 0;
    if (!(*seconds >= 0 && *seconds < 1e12))
        *seconds = 0;
    if (!st)
        *step = s;
    vp_st_close(f);
    return st;
}

/* Keep the log lines of steps <= step (a resumed run rewrites the rest). */
static vp_status truncate_log(const char *path, int64_t step)
{
    char *text;
    size_t n;
    if (vp_file_read(path, &text, &n))
        return VP_OK; /* no log yet */
    size_t keep = 0;
    for (char *line = text; line < text + n;) {
        char *nl = memchr(line, '\n', (size_t)(text + n - line));
        if (!nl)
            break;
        long long s = -1;
        if (sscanf(line, "{\"step\": %lld", &s) != 1 || s > step)
            break;
        keep = (size_t)(nl + 1 - text);
        line = nl + 1;
    }
    vp_status st = vp_file_write_atomic(path, text, keep);
    free(text);
    return st;
}

/* The mean loss and terms (sums[4] / *n) of the log lines of steps in
 * (from, to] that have a loss (a skipped step's is null): the part of a
 * progress window an earlier call ran. */
static void log_window(const char *path, int64_t from, int64_t to, double sums[4], int64_t *n)
{
    static const char *const keys[4] = {"loss", "loss_class", "loss_mask", "loss_dice"};
    memset(sums, 0, 4 * sizeof *sums);
    *n = 0;
    char *text;
    size_t len;
    if (from >= to || vp_file_read(path, &text, &len))
        return;
    for (char *line = text, *nl; line < text + len && (nl = memchr(line, '\n',
                                                                  (size_t)(text + len - line)));
         line = nl + 1) {
        long long s = -1;
        if (sscanf(line, "{\"step\": %lld", &s) != 1 || s <= from || s > to)
            continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)(nl - line));
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(j, "loss");
        if (cJSON_IsNumber(l)) {
            for (int k = 0; k < 4; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
                sums[k] += cJSON_IsNumber(v) ? v->valuedouble : 0;
            }
            ++*n;
        }
        cJSON_Delete(j);
    }
    free(text);
}

/* The log's steps skipped for a non-finite loss or gradient norm. */
static int64_t count_skipped(const char *path)
{
    char *text;
    size_t n;
    int64_t k = 0;
    if (vp_file_read(path, &text, &n))
        return 0;
    for (char *p = text; (p = strstr(p, "\"skipped\": true")); p++)
        k++;
    free(text);
    return k;
}

/* A log value: the number, or null when it is not finite (JSON has no NaN). */
static const char *jnum(double x, char *buf, size_t n)
{
    if (isfinite(x))
        snprintf(buf, n, "%.9g", x);
    else
        snprintf(buf, n, "null");
    return buf;
}

/* The sum of squares of n floats, in double (finite exactly when every
 * float is: a float's square cannot overflow a double). */
static double sum_squares(const float *x, uint64_t n)
{
    double a[4] = {0};
    uint64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            a[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < n; i++)
        a[0] += (double)x[i] * (double)x[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* Temporary files a killed run left (vp_file_write_atomic's and
 * vp_st_write's, ".<name>.tmp.<pid>.<k>" next to the outputs): never a
 * checkpoint, so they go. */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4200];
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!unlink(path))
            vp_log(VP_LOG_INFO, "%s: removed, left by an interrupted write", path);
    }
    closedir(d);
}

/* ---- progress ------------------------------------------------------------------- */

static void fmt_time(double s, char *buf, size_t n)
{
    long t = s > 0 && s < 1e8 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* ---- the run ---------------------------------------------------------------------- */

/* vp_graph_run_buckets' hand-over: bucket k, all-reduced in place (x is
 * the host gradient at the bucket's offset, which the spans name too). */
static vp_status reduce_bucket(void *user, uint32_t k, float *x, uint64_t count)
{
    vp_dist_buckets *b = user;
    if (k != b->done || x != b->x + b->span[k].offset || count != b->span[k].count)
        return vp_error_set(VP_ERR_INTERNAL, "gradient bucket %u out of order", k);
    return vp_dist_bucket(b);
}

typedef struct run_ctx {
    const vp_train_cfg *tc;
    const vp_train_opts *o;
    vp_device *dev;
    const vp_config *root;
    vp_model *m;
    vp_model *eval_m; /* built at the first evaluation */
    const vp_dist *d; /* the job */
    bool quiet;       /* no progress (options, or not rank 0) */
    bool line;        /* an updating progress line */
    bool line_open;
    const char *label;
    double prev_seconds; /* training time of the calls before this one (the checkpoint's) */
} run_ctx;

static void end_line(run_ctx *c)
{
    if (c->line_open) {
        fputc('\n', stderr);
        c->line_open = false;
    }
}

static vp_status evaluate(run_ctx *c, const char *results, vp_coco_stats *stats)
{
    vp_status st = VP_OK;
    if (!c->eval_m) {
        vp_model_opts mo = {.batch = c->tc->eval_batch};
        st = vp_model_create(c->dev, c->root, &mo, &c->eval_m);
    }
    if (!st)
        st = vp_model_copy_params(c->m, c->eval_m);
    char label[128];
    snprintf(label, sizeof label, "%s eval", c->label);
    /* every rank runs its share of the images (or all stop together) */
    if (c->d->size > 1 && (st = vp_dist_agree(c->d, st)))
        return st;
    return vp_evaluate(c->eval_m, c->tc->eval_batch, c->tc->val_ann, c->tc->val_images, results,
                       c->quiet ? NULL : label, c->d, stats);
}

static vp_status write_outputs(run_ctx *c, const vp_train_result *r)
{
    char path[4200];
    const vp_build *b = vp_model_build(c->m);
    vp_graph *g = vp_model_graph(c->m);
    uint32_t np = vp_build_param_count(b);
    vp_st_entry *e = calloc(np ? np : 1, sizeof *e);
    float **bufs = calloc(np ? np : 1, sizeof *bufs);
    vp_status st = e && bufs ? VP_OK : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    for (uint32_t i = 0; !st && i < np; i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        size_t k = (size_t)vp_gt_nelem(t);
        if (!(bufs[i] = malloc(k * sizeof(float))))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        if (!st)
            st = vp_graph_read(g, t, bufs[i], k * sizeof(float));
        e[i] = (vp_st_entry){vp_gt_name(t), VP_ST_F32, vp_gt_ndim(t), vp_gt_shape(t), bufs[i]};
    }
    snprintf(path, sizeof path, "%s/model.safetensors", c->tc->out);
    if (!st)
        st = vp_st_write(path, e, np, NULL, 0);
    for (uint32_t i = 0; bufs && i < np; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
    if (!st && vp_model_pefts(c->m)->n) {
        snprintf(path, sizeof path, "%s/adapter", c->tc->out);
        st = vp_model_save_peft(c->m, c->root, path);
    }
    if (st)
        return st;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "trainable_params", (double)r->trainable);
    cJSON_AddNumberToObject(j, "all_params", (double)r->total);
    cJSON_AddNumberToObject(j, "trainable_percent",
                            r->total ? 100.0 * (double)r->trainable / (double)r->total : 0);
    cJSON_AddNumberToObject(j, "steps", (double)c->tc->steps);
    cJSON_AddNumberToObject(j, "train_seconds", c->prev_seconds + r->seconds);
    cJSON_AddNumberToObject(j, "final_loss", r->final_loss);
    snprintf(path, sizeof path, "%s/log.jsonl", c->tc->out); /* over every call of the run */
    cJSON_AddNumberToObject(j, "skipped_steps", (double)count_skipped(path));
    cJSON_AddNumberToObject(j, "device_bytes", (double)r->device_bytes);
    cJSON_AddNumberToObject(j, "ranks", r->ranks);
    if (r->ranks > 1) {
        cJSON_AddNumberToObject(j, "allreduce_bytes_per_step", (double)r->allreduce_bytes);
        cJSON_AddNumberToObject(j, "allreduce_seconds", r->allreduce_seconds);
        cJSON_AddNumberToObject(j, "allreduce_exposed_seconds", r->allreduce_exposed_seconds);
        cJSON_AddNumberToObject(j, "gradient_buckets", r->buckets);
    }
    if (r->evaluated) {
        const double *s = &r->stats.ap;
        static const char *const names[12] = {"AP", "AP50", "AP75", "APs", "APm", "APl",
                                              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"};
        cJSON *ev = cJSON_AddObjectToObject(j, "segm");
        for (int i = 0; i < 12; i++)
            cJSON_AddNumberToObject(ev, names[i], s[i]);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/metrics.json", c->tc->out);
    st = text ? vp_file_write_atomic(path, text, strlen(text))
              : vp_error_set(VP_ERR_NOMEM, "out of host memory");
    free(text);
    return st;
}

/* The final outputs train.out lacks, as a list for a message in buf
 * (empty: none). */
static int missing_outputs(run_ctx *c, char *buf, size_t n)
{
    const char *names[4];
    int k = 0;
    if (c->tc->val_ann)
        names[k++] = "results.json";
    names[k++] = "model.safetensors";
    if (vp_model_pefts(c->m)->n)
        names[k++] = "adapter/";
    names[k++] = "metrics.json";
    int missing = 0;
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < k; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", c->tc->out, names[i]);
        if (!access(path, F_OK))
            continue;
        int w = snprintf(buf + len, n - len, "%s%s", missing++ ? ", " : "", names[i]);
        len += w > 0 && (size_t)w < n - len ? (size_t)w : 0;
    }
    return missing;
}

/* A rank's signal (opts.interrupt) as 4 values that sum across ranks into
 * the job's: ranks that saw SIGTERM, SIGINT, another signal, and the sum of
 * those others. */
#define SIG_SLOTS 4
static void sig_slots(int mine, double v[SIG_SLOTS])
{
    bool other = mine && mine != SIGTERM && mine != SIGINT;
    v[0] = mine == SIGTERM;
    v[1] = mine == SIGINT;
    v[2] = other;
    v[3] = other ? mine : 0;
}

/* The job's signal from the summed slots: SIGTERM when any rank saw it,
 * else SIGINT, else the other one (0: none). */
static int sig_of(const double v[SIG_SLOTS])
{
    return v[0] > 0 ? SIGTERM : v[1] > 0 ? SIGINT : v[2] > 0 ? (int)(v[3] / v[2] + 0.5) : 0;
}

/* The job's signal, agreed by every rank at the same point (collective). */
static vp_status agree_signal(const vp_dist *d, int mine, int *sig)
{
    double v[SIG_SLOTS];
    sig_slots(mine, v);
    vp_status st = vp_dist_agree_sum(d, VP_OK, v, SIG_SLOTS);
    *sig = st ? 0 : sig_of(v);
    return st;
}

static int64_t head_classes(const vp_config *root)
{
    int64_t n = -1;
    const vp_config *head = vp_cfg_get(vp_cfg_get(root, "model"), "head");
    if (vp_cfg_int(head, "classes", -1, &n))
        n = -1;
    return n;
}

vp_status vp_train_run(vp_device *dev, const vp_config *root, const vp_train_opts *o,
                       vp_train_result *out)
{
    memset(out, 0, sizeof *out);
    vp_train_cfg tc;
    vp_status st = vp_train_cfg_read(root, &tc);
    if (st)
        return st;
    run_ctx c = {.tc = &tc, .o = o, .dev = dev, .root = root,
                 .label = o->label ? o->label : "train"};
    /* Data parallel: every rank trains its shard; rank 0 alone prints and
     * writes. */
    static const vp_dist one = {.size = 1, .local_size = 1};
    const vp_dist *d = o->dist ? o->dist : &one;
    bool lead = d->rank == 0, synced = false;
    vp_progress progress = lead ? o->progress : VP_PROGRESS_NONE;
    c.d = d;
    c.quiet = progress == VP_PROGRESS_NONE;
    c.line = progress == VP_PROGRESS_LINE ||
             (progress == VP_PROGRESS_AUTO && isatty(STDERR_FILENO));
    float *gbuf = NULL;
    uint64_t glen = 0;
    vp_dist_span *spans = NULL;
    vp_dist_buckets db = {.d = d};
    vp_dataset *ds = NULL;
    vp_loader *ld = NULL;
    FILE *log = NULL;
    char *fp = fingerprint(root, &tc);
    char path[4200], ckpt[4200];
    if (!fp)
        return vp_error_set(VP_ERR_NOMEM, "out of host memory");
    if ((st = vp_mkdir_p(tc.out)))
        goto done;
    if (lead) /* the writer cleans up after itself */
        remove_stale_temps(tc.out);
    if ((st = vp_dataset_load(tc.data_ann, tc.data_images,
                              &(vp_dataset_opts){.skip_bad = tc.skip_bad}, &ds)))
        goto done;
    int64_t classes = head_classes(root);
    if (classes >= 0 && classes < (int64_t)vp_dataset_classes(ds)) {
        st = vp_cfg_fail(vp_cfg_get(vp_cfg_get(root, "model"), "head"), "classes",
                         "%lld, but %s has %u categories", (long long)classes, tc.data_ann,
                         vp_dataset_classes(ds));
        goto done;
    }
    vp_adamw_cfg aw = {(float)tc.beta1, (float)tc.beta2, (float)tc.eps, (float)tc.weight_decay,
                       (float)tc.clip_grad_norm};
    vp_model_opts mo = {.batch = tc.batch, .train = true, .adamw = &aw,
                        .lr_groups = tc.lr_groups, .n_lr_groups = tc.n_lr_groups,
                        .deterministic = tc.deterministic,
                        .bucket_bytes = d->size > 1
                                            ? (uint64_t)(vp_train_bucket_mb(&tc, dev) * 1048576.0)
                                            : 0};
    if ((st = vp_model_create(dev, root, &mo, &c.m)))
        goto done;
    vp_graph *g = vp_model_graph(c.m);
    io_set io;
    if ((st = find_io(c.m, tc.batch, &io)))
        goto done;
    const vp_build *b = vp_model_build(c.m);
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        vp_gt *t = vp_build_param_at(b, i)->t;
        out->total += (uint64_t)vp_gt_nelem(t);
        out->trainable += vp_gt_trainable(t) ? (uint64_t)vp_gt_nelem(t) : 0;
    }
    out->device_bytes = vp_graph_memory(g).total;
    out->ranks = d->size;

    int64_t start = 0;
    bool completing = false; /* resumed at the last step: only the final outputs */
    snprintf(ckpt, sizeof ckpt, "%s/" CKPT_NAME, tc.out);
    snprintf(path, sizeof path, "%s/log.jsonl", tc.out);
    if (o->resume) {
        if (access(ckpt, F_OK)) {
            st = vp_error_set(VP_ERR_NOT_FOUND, "%s: no checkpoint to resume from (train.out "
                              "is %s)", ckpt, tc.out);
            goto done;
        }
        /* every rank loads the checkpoint; rank 0 alone owns the log */
        if ((st = load_checkpoint(c.m, ckpt, fp, &start, &c.prev_seconds)) ||
            (lead && (st = truncate_log(path, start))))
            goto done;
        /* At the last step: a run stopped between its final checkpoint and
         * its outputs is completed from the checkpoint. Rank 0 looks at
         * train.out; the setup's agreement below carries its verdict. */
        char missing[256] = "";
        completing = start == tc.steps;
        if (start > tc.steps || (lead && completing && !missing_outputs(&c, missing,
                                                                        sizeof missing))) {
            st = vp_error_set(VP_ERR_INVALID, "%s: already at step %lld of %lld%s: nothing to "
                              "resume (raise train.steps to train longer)", ckpt,
                              (long long)start, (long long)tc.steps,
                              start == tc.steps ? ", with every output written" : "");
            goto done;
        }
        if (lead && completing)
            vp_log(VP_LOG_INFO, "%s: %s holds the last step (%lld), but %s %s missing (the "
                   "run stopped before its final outputs): %s from the checkpoint", c.label,
                   ckpt, (long long)start, missing, strchr(missing, ',') ? "are" : "is",
                   tc.val_ann ? "evaluating and writing them" : "writing them");
        else if (lead)
            vp_log(VP_LOG_INFO, "%s: resuming at step %lld of %lld from %s", c.label,
                   (long long)start, (long long)tc.steps, ckpt);
    }
    if (lead && !(log = fopen(path, o->resume ? "a" : "w"))) {
        st = vp_error_set(VP_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    if (log) /* a line per step as it ends, for whoever follows the run */
        setvbuf(log, NULL, _IOLBF, 0);
    vp_loader_opts lo = {.batch = (int)tc.batch, .size = (int)io.size, .mask_h = (int)io.hm,
                         .mask_w = (int)io.wm, .max_targets = (int)io.T, .train = true,
                         .seed = (uint64_t)tc.seed, .start = (uint64_t)(start * tc.accum),
                         .shard_rank = d->size > 1 ? d->rank : 0,
                         .shard_count = d->size > 1 ? d->size : 0};
    if (!completing && (st = vp_loader_create(ds, &lo, &ld)))
        goto done;
    /* the host copy of the gradients: averaged across ranks, and where every
     * step's norm is taken */
    glen = vp_graph_grads_len(g);
    if (d->size > 1)
        out->allreduce_bytes = glen * sizeof(float);
    /* the gradient on the host: only to all-reduce it across ranks */
    if (!completing && glen && d->size > 1 && !(gbuf = malloc((size_t)glen * sizeof *gbuf)))
        st = vp_error_set(VP_ERR_NOMEM, "out of host memory for the gradients");
    if (d->size > 1) {
        uint32_t nb = 0;
        const vp_grad_bucket *gb = vp_graph_buckets(g, &nb);
        if (!st && nb && !(spans = malloc(nb * sizeof *spans)))
            st = vp_error_set(VP_ERR_NOMEM, "out of host memory");
        for (uint32_t k = 0; !st && k < nb; k++)
            spans[k] = (vp_dist_span){gb[k].offset, gb[k].count};
        db = (vp_dist_buckets){.d = d, .x = gbuf, .span = spans, .n = st ? 0 : nb};
        out->buckets = db.n;
    }
    /* every rank set up, or all stop with the first failure */
    synced = true;
    if ((st = vp_dist_agree(d, st)))
        goto done;
    if (progress != VP_PROGRESS_NONE && !completing) {
        fprintf(stderr, "%s: %u images, %lld steps of %lld x %lld images", c.label,
                vp_dataset_size(ds), (long long)tc.steps, (long long)tc.batch,
                (long long)tc.accum);
        if (d->size > 1)
            fprintf(stderr, " on each of %d ranks (global batch %lld; %.2f MiB of gradients "
                    "averaged per step in %u bucket%s%s)", d->size,
                    (long long)(tc.batch * tc.accum * d->size),
                    (double)glen * sizeof(float) / (1 << 20), db.n ? db.n : 1,
                    db.n > 1 ? "s" : "", db.n ? " during the backward pass"
                                              : " after the backward pass");
        fprintf(stderr, "; %" PRIu64 " of %" PRIu64 " parameters trainable (%.2f%%)\n",
                out->trainable, out->total,
                100.0 * (double)out->trainable / (double)out->total);
    }

    double t0 = vp_now_s(), win_loss = 0, win_terms[3] = {0};
    int64_t win_n = 0;
    if (lead && start) { /* the part of the progress window the earlier call ran */
        double w[4];
        int64_t from = completing ? (tc.steps - 1) / tc.log_every * tc.log_every
                                  : start / tc.log_every * tc.log_every;
        log_window(path, from, start, w, &win_n);
        win_loss = w[0];
        for (int k = 0; k < 3; k++)
            win_terms[k] = w[1 + k];
        if (completing && win_n)
            out->final_loss = win_loss / (double)win_n;
    }
    int64_t last_ckpt = start; /* the step of the checkpoint on disk (0: none) */
    for (int64_t s = start + 1; s <= tc.steps; s++) {
        /* the loss and its three terms; then the signal slots and the ranks
         * whose gradient norm is not finite, summed across the ranks */
        double sums[4 + SIG_SLOTS + 1] = {0};
        bool agreed = false;  /* st, if a failure, is every rank's already */
        for (int64_t a = 0; a < tc.accum; a++) {
            const vp_batch *bt = NULL;
            float l = 0;
            if (!st)
                st = vp_loader_next(ld, &bt);
            /* The global batch's instances, summed across the ranks with
             * every rank's status: a rank that failed, here or in the
             * previous run, stops all of them before the next run. */
            double inst = st ? 0 : count_instances(&io, bt, tc.batch);
            if (d->size > 1 && (st = vp_dist_agree_sum(d, st, &inst, 1)))
                agreed = true;
            if (st)
                break;
            /* the last run hands its gradient buckets to the all-reduce as
             * the backward pass finishes them */
            bool last = a + 1 == tc.accum && db.n;
            if ((st = feed(g, &io, bt, tc.batch, inst / d->size)) ||
                (st = last ? vp_graph_run_buckets(g, gbuf, reduce_bucket, &db)
                           : vp_graph_run(g)) ||
                (st = vp_graph_read(g, io.loss, &l, sizeof l)))
                continue; /* to the agreement above, or below after the last run */
            sums[0] += l;
            for (int k = 0; !st && k < 3; k++) {
                float v = 0;
                if (io.terms[k])
                    st = vp_graph_read(g, io.terms[k], &v, sizeof v);
                sums[1 + k] += v;
            }
        }
        /* The step's gradient, on the host: its norm decides whether the
         * update is applied. A job agrees on the sums, on a signal and on
         * a non-finite gradient in one collective, which every rank
         * reaches (a rank that failed since the last agreement brings its
         * status), so all take the same decision at the same step. */
        double gsq = 0;
        if (d->size > 1 && !agreed) {
            double ta = vp_now_s(), tq = 0;
            bool ok;
            if (db.n) /* the buckets were reduced during the run */
                ok = !(st = vp_dist_buckets_end(&db, st));
            else if ((ok = !(st = vp_dist_agree(d, st)))) { /* all ranks ran; then the mean */
                st = vp_graph_grads_read(g, gbuf, glen);
                vp_status rs = vp_dist_allreduce_mean(d, gbuf, glen); /* on every rank */
                st = st ? st : rs;
            }
            if (ok) {
                if (!st)
                    st = vp_graph_grads_write(g, gbuf, glen);
                tq = vp_now_s();
                gsq = st ? 0 : sum_squares(gbuf, glen);
                tq = vp_now_s() - tq;
                sig_slots(o->interrupt ? *o->interrupt : 0, sums + 4);
                sums[4 + SIG_SLOTS] = !isfinite(gsq);
                st = vp_dist_agree_sum(d, st, sums, 4 + SIG_SLOTS + 1);
            }
            double spent = vp_now_s() - ta - tq;
            if (!db.n)
                out->allreduce_seconds += spent;
            out->allreduce_exposed_seconds += spent;
        } else if (!st && glen) {
            /* on the device: one float read, not the whole gradient */
            st = vp_graph_grad_sqnorm(g, &gsq);
            sums[4 + SIG_SLOTS] = !isfinite(gsq);
        }
        if (st)
            goto done;
        double loss = sums[0] / (double)(tc.accum * d->size), terms[3];
        for (int k = 0; k < 3; k++)
            terms[k] = sums[1 + k] / (double)(tc.accum * d->size);
        double lr = vp_train_lr(&tc, s), gnorm = sqrt(gsq) / (double)tc.accum;
        char lb[4][40];
        if (!isfinite(loss) || sums[4 + SIG_SLOTS] > 0) {
            /* nothing of this step reaches the parameters or the moments */
            char what[96];
            if (!isfinite(loss))
                snprintf(what, sizeof what, "the loss is %g", loss);
            else if (!isfinite(gnorm))
                snprintf(what, sizeof what, "the gradient norm is %g (the loss %.4f)", gnorm,
                         loss);
            else /* another rank's averaged gradient (MPI may round differently) */
                snprintf(what, sizeof what, "the gradient norm is not finite on %.0f of %d "
                         "ranks (the loss %.4f)", sums[4 + SIG_SLOTS], d->size, loss);
            end_line(&c);
            if (!tc.skip_nonfinite) {
                char at[64] = "no checkpoint yet";
                if (last_ckpt)
                    snprintf(at, sizeof at, "the last checkpoint is step %lld's",
                             (long long)last_ckpt);
                st = vp_error_set(VP_ERR_INVALID, "%s: %s at step %lld; stopped before its "
                                  "update (%s): lower train.lr, set "
                                  "train.clip_grad_norm, check the data and model.weights, or "
                                  "set train.skip_nonfinite to skip such steps", c.label, what,
                                  (long long)s, at);
                goto done;
            }
            if ((st = vp_graph_zero_grads(g)))
                goto done;
            if (lead)
                vp_log(VP_LOG_WARN, "%s: step %lld: %s: skipped, no update "
                       "(train.skip_nonfinite)", c.label, (long long)s, what);
            if (log)
                fprintf(log, "{\"step\": %lld, \"lr\": %.9g, \"loss\": %s, \"loss_class\": %s, "
                        "\"loss_mask\": %s, \"loss_dice\": %s, \"skipped\": true}\n",
                        (long long)s, lr, jnum(loss, lb[0], sizeof lb[0]),
                        jnum(terms[0], lb[1], sizeof lb[1]), jnum(terms[1], lb[2], sizeof lb[2]),
                        jnum(terms[2], lb[3], sizeof lb[3]));
            out->skipped++;
        } else {
            if ((st = vp_graph_step_accum(g, (float)lr, (int)s, (int)tc.accum)))
                goto done;
            if (log)
                fprintf(log, "{\"step\": %lld, \"lr\": %.9g, \"loss\": %.9g, \"loss_class\": "
                        "%.9g, \"loss_mask\": %.9g, \"loss_dice\": %.9g}\n", (long long)s, lr,
                        loss, terms[0], terms[1], terms[2]);
            win_loss += loss;
            for (int k = 0; k < 3; k++)
                win_terms[k] += terms[k];
            win_n++;
        }
        out->steps++;
        bool show = c.line || s % tc.log_every == 0 || s == tc.steps;
        if (progress != VP_PROGRESS_NONE && show) {
            double el = vp_now_s() - t0, rate = (double)out->steps / el;
            char eta[32], lossf[96] = "loss - (every step of the window skipped)";
            fmt_time((double)(tc.steps - s) / rate, eta, sizeof eta);
            double n = (double)win_n;
            if (win_n)
                snprintf(lossf, sizeof lossf, "loss %.4f (class %.3f mask %.3f dice %.3f)",
                         win_loss / n, win_terms[0] / n, win_terms[1] / n, win_terms[2] / n);
            fprintf(stderr, "%s%s step %lld/%lld %s lr %.2e %.2f steps/s ETA %s%s",
                    c.line ? "\r" : "", c.label, (long long)s, (long long)tc.steps, lossf, lr,
                    rate, eta, c.line ? "\033[K" : "\n");
            c.line_open = c.line;
            fflush(stderr);
        }
        if (s % tc.log_every == 0 || s == tc.steps) {
            out->final_loss = win_n ? win_loss / (double)win_n : NAN;
            win_loss = win_terms[0] = win_terms[1] = win_terms[2] = 0;
            win_n = 0;
        }
        /* A signal: every rank's from the agreement above; one process
         * looks again, for one that came during the update. */
        int sig = d->size > 1 ? sig_of(sums + 4) : o->interrupt ? *o->interrupt : 0;
        bool stop = sig || (o->stop_after > 0 && s >= o->stop_after && s < tc.steps);
        if (lead && ((tc.checkpoint_every && s % tc.checkpoint_every == 0) || s == tc.steps || stop)) {
            fflush(log);
            if ((st = save_checkpoint(c.m, ckpt, s, fp, c.prev_seconds + vp_now_s() - t0)))
                goto done;
        }
        if (tc.checkpoint_every && s % tc.checkpoint_every == 0) /* every rank counts */
            last_ckpt = s;
        if (stop) {
            out->seconds = vp_now_s() - t0;
            out->stopped_at = s;
            out->interrupted = sig;
            end_line(&c);
            if (progress != VP_PROGRESS_NONE && !sig)
                fprintf(stderr, "%s: stopped after step %lld; vpeft train --resume continues\n",
                        c.label, (long long)s);
            goto done;
        }
        if (tc.val_ann && tc.eval_every && s % tc.eval_every == 0 && s != tc.steps) {
            vp_coco_stats es; /* every rank evaluates its share; rank 0 scores */
            end_line(&c);
            if ((st = evaluate(&c, NULL, &es)))
                goto done;
            if (progress != VP_PROGRESS_NONE)
                fprintf(stderr, "%s step %lld: mask AP %.3f AP50 %.3f AP75 %.3f\n", c.label,
                        (long long)s, es.ap, es.ap50, es.ap75);
        }
    }
    out->seconds = vp_now_s() - t0;
    out->completed = completing;
    if (db.n) { /* the buckets' all-reduces, and what the backward pass did not hide */
        vp_graph_stats gs = vp_graph_get_stats(g);
        out->allreduce_seconds = db.seconds + out->allreduce_exposed_seconds;
        out->allreduce_exposed_seconds += gs.handover_exposed_ms * 1e-3;
    }
    end_line(&c);
    vp_loader_destroy(ld);
    ld = NULL;
    /* a signal since the last step's agreement: the final checkpoint is on
     * disk, the outputs are left to --resume */
    int sig = 0;
    if ((st = agree_signal(d, o->interrupt ? *o->interrupt : 0, &sig)))
        goto done;
    if (sig) {
        out->interrupted = sig;
        out->stopped_at = tc.steps;
        goto done;
    }
    if (tc.val_ann) { /* every rank its share; rank 0 writes and scores */
        snprintf(path, sizeof path, "%s/results.json", tc.out);
        if ((st = evaluate(&c, path, &out->stats)))
            goto done;
        out->evaluated = lead;
    }
    if (!lead) /* rank 0 writes the outputs */
        goto done;
    if (out->evaluated) {
        if (progress != VP_PROGRESS_NONE)
            fprintf(stderr, "%s: mask AP %.3f AP50 %.3f AP75 %.3f on %s\n", c.label,
                    out->stats.ap, out->stats.ap50, out->stats.ap75, tc.val_ann);
    }
    st = write_outputs(&c, out);
done:
    end_line(&c);
    if (d->size > 1 && st && !synced) /* the others wait for this rank in the setup's agreement */
        st = vp_dist_agree(d, st);
    free(gbuf);
    free(spans);
    if (log && fclose(log) && !st)
        st = vp_error_set(VP_ERR_IO, "%s/log.jsonl: cannot write: %s", tc.out, strerror(errno));
    vp_loader_destroy(ld);
    vp_model_destroy(c.eval_m);
    vp_model_destroy(c.m);
    vp_dataset_destroy(ds);
    free(fp);
    return st;
}
