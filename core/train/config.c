/*
 * The "train" section of a run config (train.h): every key, its default
 * and its range, checked once so that a typo fails before minutes of
 * device work; and the learning-rate schedule.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train/train.h"
#include "util/error.h"

static const char *const train_keys[] = {
    "data", "val", "out", "steps", "batch", "accum", "lr", "min_lr", "weight_decay", "betas",
    "eps", "clip_grad_norm", "warmup", "schedule", "milestones", "gamma", "lr_mult",
    "trainable", "seed", "log_every", "eval_every", "checkpoint_every",
    "skip_bad_annotations", "eval_batch", "deterministic", "bucket_mb", "skip_nonfinite",
};

static const char *const split_keys[] = {"format", "images", "annotations"};

static vp_status split(const vp_config *train, const char *key, bool required, const char **ann,
                       const char **images)
{
    *ann = *images = NULL;
    const vp_config *s = vp_cfg_get(train, key);
    if (!s)
        return required ? vp_cfg_fail(train, key, "missing: {\"format\": \"coco\", \"images\": "
                                      "DIR, \"annotations\": FILE}")
                        : VP_OK;
    vp_status st = vp_cfg_check_keys(s, split_keys, 3);
    const char *format = NULL;
    if (!st)
        st = vp_cfg_string(s, "format", "coco", &format);
    if (!st && strcmp(format, "coco"))
        st = vp_cfg_fail(s, "format", "\"%s\": the only format is \"coco\"", format);
    if (!st)
        st = vp_cfg_file(s, "annotations", ann);
    if (!st && !*ann)
        st = vp_cfg_fail(s, "annotations", "missing: the COCO instances JSON file");
    if (!st)
        st = vp_cfg_file(s, "images", images);
    return st;
}

static vp_status int_in(const vp_config *c, const char *key, int64_t def, int64_t lo, int64_t hi,
                        int64_t *out)
{
    vp_status st = vp_cfg_int(c, key, def, out);
    if (!st && (*out < lo || *out > hi))
        st = vp_cfg_fail(c, key, "%lld is out of range [%lld, %lld]", (long long)*out,
                         (long long)lo, (long long)hi);
    return st;
}

static vp_status num_in(const vp_config *c, const char *key, double def, double lo, double hi,
                        double *out)
{
    vp_status st = vp_cfg_float(c, key, def, out);
    if (!st && !(*out >= lo && *out <= hi))
        st = vp_cfg_fail(c, key, "%g is out of range [%g, %g]", *out, lo, hi);
    return st;
}

vp_status vp_train_cfg_read(const vp_config *root, vp_train_cfg *o)
{
    memset(o, 0, sizeof *o);
    /* the whole config's keys first: "trian" is a typo, not a missing train */
    vp_status kst = vp_model_check_keys(root);
    if (kst)
        return kst;
    const vp_config *t = vp_cfg_get(root, "train");
    if (!t)
        return vp_cfg_fail(root, "train", "missing: the training section (data, steps, lr, ...)");
    vp_status st = vp_cfg_check_keys(t, train_keys, sizeof train_keys / sizeof *train_keys);
    if (!st)
        st = split(t, "data", true, &o->data_ann, &o->data_images);
    if (!st)
        st = split(t, "val", false, &o->val_ann, &o->val_images);
    if (!st)
        st = vp_cfg_file(t, "out", &o->out);
    if (!st && !o->out) {
        const char *name = vp_cfg_file_name(root), *slash = strrchr(name, '/');
        name = slash ? slash + 1 : name;
        size_t n = strlen(name);
        if (n > 5 && !strcmp(name + n - 5, ".json"))
            n -= 5;
        /* "runs/<config name without .json>" */
        snprintf(o->out_default, sizeof o->out_default, "runs/%.*s", (int)n, name);
        o->out = o->out_default;
    }
    if (!st)
        st = int_in(t, "steps", 1000, 1, INT32_MAX, &o->steps);
    if (!st)
        st = int_in(t, "batch", 2, 1, 4096, &o->batch);
    if (!st)
        st = int_in(t, "accum", 1, 1, 4096, &o->accum);
    if (!st)
        st = int_in(t, "warmup", 0, 0, o->steps, &o->warmup);
    if (!st)
        st = int_in(t, "seed", 0, 0, INT64_MAX, &o->seed);
    if (!st)
        st = int_in(t, "log_every", 10, 1, INT32_MAX, &o->log_every);
    if (!st)
        st = int_in(t, "eval_every", 0, 0, INT32_MAX, &o->eval_every);
    if (!st)
        st = int_in(t, "checkpoint_every", 500, 0, INT32_MAX, &o->checkpoint_every);
    if (!st)
        st = int_in(t, "eval_batch", o->batch, 1, 4096, &o->eval_batch);
    if (!st)
        st = num_in(t, "lr", 1e-4, 0, 10, &o->lr);
    if (!st)
        st = num_in(t, "min_lr", 0, 0, o->lr, &o->min_lr);
    if (!st)
        st = num_in(t, "weight_decay", 0.05, 0, 10, &o->weight_decay);
    if (!st)
        st = num_in(t, "eps", 1e-8, 0, 1, &o->eps);
    if (!st)
        st = num_in(t, "clip_grad_norm", 0, 0, 1e30, &o->clip_grad_norm);
    if (!st)
        st = num_in(t, "gamma", 0.1, 0, 1, &o->gamma);
    if (!st)
        st = vp_cfg_bool(t, "skip_bad_annotations", false, &o->skip_bad);
    if (!st)
        st = vp_cfg_bool(t, "deterministic", true, &o->deterministic);
    if (!st)
        st = vp_cfg_bool(t, "skip_nonfinite", false, &o->skip_nonfinite);
    o->bucket_mb = -1; /* by device: vp_train_bucket_mb */
    if (!st && vp_cfg_get(t, "bucket_mb"))
        st = num_in(t, "bucket_mb", 0, 0, 65536, &o->bucket_mb);
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    if (!st && vp_cfg_get(t, "betas")) {
        const vp_config *b = vp_cfg_get(t, "betas");
        if (vp_cfg_type_of(t, "betas") != VP_CFG_ARRAY || vp_cfg_len(b) != 2)
            return vp_cfg_fail(t, "betas", "expected [beta1, beta2]");
        st = num_in(vp_cfg_at(b, 0), NULL, 0, 0, 0.999999, &o->beta1);
        if (!st)
            st = num_in(vp_cfg_at(b, 1), NULL, 0, 0, 0.999999, &o->beta2);
    }
    const char *sched = NULL;
    if (!st)
        st = vp_cfg_string(t, "schedule", "cosine", &sched);
    if (!st) {
        if (!strcmp(sched, "cosine"))
            o->schedule = VP_SCHED_COSINE;
        else if (!strcmp(sched, "step"))
            o->schedule = VP_SCHED_STEP;
        else if (!strcmp(sched, "constant"))
            o->schedule = VP_SCHED_CONSTANT;
        else
            st = vp_cfg_fail(t, "schedule", "\"%s\": expected \"cosine\", \"step\" or "
                             "\"constant\"", sched);
    }
    const vp_config *ms = vp_cfg_get(t, "milestones");
    if (!st && ms) {
        int n = vp_cfg_len(ms);
        if (vp_cfg_type_of(t, "milestones") != VP_CFG_ARRAY || n > VP_TRAIN_MAX_MILESTONES)
            return vp_cfg_fail(t, "milestones", "expected a list of at most %d step numbers",
                               VP_TRAIN_MAX_MILESTONES);
        for (int i = 0; !st && i < n; i++) {
            st = int_in(vp_cfg_at(ms, i), NULL, 0, 1, o->steps, &o->milestones[i]);
            if (!st && i && o->milestones[i] <= o->milestones[i - 1])
                st = vp_cfg_fail(t, "milestones", "must increase");
        }
        o->n_milestones = (uint32_t)n;
    }
    if (!st && o->schedule == VP_SCHED_STEP && !o->n_milestones)
        st = vp_cfg_fail(t, "milestones", "missing: the steps where the step schedule "
                         "multiplies lr by gamma");
    const vp_config *lm = vp_cfg_get(t, "lr_mult");
    if (!st && lm) {
        int n = vp_cfg_len(lm);
        if (vp_cfg_type_of(t, "lr_mult") != VP_CFG_OBJECT || n > VP_TRAIN_MAX_LR_GROUPS)
            return vp_cfg_fail(t, "lr_mult", "expected an object of at most %d "
                               "\"parameter glob\": multiplier pairs", VP_TRAIN_MAX_LR_GROUPS);
        for (int i = 0; !st && i < n; i++) {
            double mult;
            st = num_in(vp_cfg_at(lm, i), NULL, 1, 0, 1e6, &mult);
            o->lr_groups[i] = (vp_lr_group){vp_cfg_key(vp_cfg_at(lm, i)), (float)mult};
        }
        o->n_lr_groups = (uint32_t)n;
    }
    return st;
}

double vp_train_bucket_mb(const vp_train_cfg *c, vp_device *dev)
{
    if (c->bucket_mb >= 0)
        return c->bucket_mb;
    /* a CPU device computes on the cores the all-reduce would run on */
    return vp_device_get_info(dev)->type == VK_PHYSICAL_DEVICE_TYPE_CPU ? 0 : 25;
}

double vp_train_lr(const vp_train_cfg *c, int64_t step)
{
    if (step <= c->warmup)
        return c->lr * (double)step / (double)c->warmup;
    switch (c->schedule) {
    case VP_SCHED_COSINE: {
        double span = (double)(c->steps - c->warmup);
        double p = span > 0 ? (double)(step - c->warmup) / span : 1.0;
        return c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * (p > 1 ? 1 : p)));
    }
    case VP_SCHED_STEP: {
        double lr = c->lr;
        for (uint32_t i = 0; i < c->n_milestones; i++)
            if (step > c->milestones[i])
                lr *= c->gamma;
        return lr;
    }
    case VP_SCHED_CONSTANT:
        break;
    }
    return c->lr;
}
