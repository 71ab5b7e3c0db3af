/*
 * The trainer: a config's model fine-tuned on a COCO dataset with AdamW,
 * a warmup-then-decay schedule, clipping by the global norm and gradient
 * accumulation; progress on the terminal; atomic checkpoints that a
 * resumed run continues bit for bit; periodic and final COCO mask AP on
 * the validation split.
 *
 *     vp_train_cfg tc;
 *     vp_train_cfg_read(root, &tc);          // the "train" section, checked
 *     vp_train_result r;
 *     vp_train_run(dev, root, &(vp_train_opts){.resume = true}, &r);
 *
 * Files under train.out: checkpoint.safetensors (every checkpoint_every
 * steps and at the end: trainable parameters, AdamW moments, dropout seed,
 * step), log.jsonl (one line per step: step, lr, loss and its terms),
 * model.safetensors (every parameter by name at the end), adapter/ (the
 * PEFT methods in Hugging Face PEFT's layout, when the config has any),
 * results.json (COCO results of the final evaluation) and metrics.json.
 *
 * A run stopped after its last checkpoint but before those outputs (a
 * signal, a crash) is completed by --resume: the final evaluation and the
 * missing files from the checkpoint's weights. A non-finite loss or
 * gradient norm stops the run before that step's update (or skips the
 * step with train.skip_nonfinite); opts.interrupt stops it after the
 * current step with a checkpoint (docs/training.md).
 */
#ifndef VP_TRAIN_TRAIN_H
#define VP_TRAIN_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "eval/cocoeval.h"
#include "model/model.h"
#include "runtime/runtime.h"

#define VP_TRAIN_MAX_LR_GROUPS 16
#define VP_TRAIN_MAX_MILESTONES 16

typedef enum vp_schedule { VP_SCHED_COSINE, VP_SCHED_STEP, VP_SCHED_CONSTANT } vp_schedule;

typedef struct vp_train_cfg {
    const char *data_ann, *data_images;  /* train.data.{annotations, images} */
    const char *val_ann, *val_images;    /* train.val (NULL: no evaluation) */
    const char *out;                     /* train.out */
    int64_t steps, batch, accum, warmup, seed;
    int64_t log_every, eval_every, checkpoint_every;
    double lr, min_lr, weight_decay, beta1, beta2, eps, clip_grad_norm;
    vp_schedule schedule;
    double gamma;                        /* step: lr *= gamma at each milestone */
    int64_t milestones[VP_TRAIN_MAX_MILESTONES];
    uint32_t n_milestones;
    vp_lr_group lr_groups[VP_TRAIN_MAX_LR_GROUPS];
    uint32_t n_lr_groups;
    bool skip_bad;                       /* train.skip_bad_annotations */
    bool skip_nonfinite;                 /* train.skip_nonfinite: a step whose loss or
                                          * gradient norm is not finite is skipped (no
                                          * update) instead of stopping the run */
    bool deterministic;                  /* train.deterministic (default true) */
    double bucket_mb;                    /* train.bucket_mb: gradient buckets across ranks
                                          * (0: one all-reduce after the backward pass;
                                          * -1: not set, vp_train_bucket_mb decides) */
    char out_default[512];               /* out when train.out is absent (out points here) */
    int64_t eval_batch;
} vp_train_cfg;

/* The "train" section of root, with every key checked (unknown keys,
 * types, ranges: one-line errors naming the file and key). Strings point
 * into root, or for a default out into *out itself (do not copy the
 * struct). */
vp_status vp_train_cfg_read(const vp_config *root, vp_train_cfg *out);
/* The learning rate of step (1-based): linear warmup from lr/warmup to lr
 * over the first `warmup` steps, then cosine from lr to min_lr at `steps`,
 * or times gamma at each milestone, or constant. */
double vp_train_lr(const vp_train_cfg *c, int64_t step);
/* The gradient bucket size in MiB on dev: train.bucket_mb, or when unset
 * 25 (PyTorch DDP's) on GPUs and 0 on CPU devices, where the all-reduce
 * would take the cores the backward pass runs on. */
double vp_train_bucket_mb(const vp_train_cfg *c, vp_device *dev);

typedef enum vp_progress { VP_PROGRESS_AUTO, VP_PROGRESS_LINE, VP_PROGRESS_LOG,
                           VP_PROGRESS_NONE } vp_progress;

typedef struct vp_train_opts {
    bool resume;          /* continue from train.out/checkpoint.safetensors */
    vp_progress progress; /* AUTO: an updating line on a terminal, else log lines */
    const char *label;    /* prefix of progress lines (NULL: "train") */
    int64_t stop_after;   /* > 0: stop after this step, as if interrupted there (a
                           * checkpoint is written; no evaluation or final files) */
    const struct vp_dist *dist; /* the data-parallel job (NULL: one process): each rank
                           * trains its shard of every global batch, gradients are
                           * averaged before each step; rank 0 alone prints,
                           * evaluates and writes */
    volatile sig_atomic_t *interrupt; /* NULL, or where a signal handler stores the signal
                           * (0: none): once set, the step that runs finishes, its
                           * checkpoint is written and the run returns VP_OK with
                           * result.interrupted set (before the final evaluation and
                           * outputs when it was the last step: --resume writes them).
                           * Across ranks the first step any rank sees it at is every
                           * rank's last (SIGTERM wins over another signal). */
} vp_train_opts;

typedef struct vp_train_result {
    uint64_t trainable, total;   /* parameter counts */
    int64_t steps;               /* steps run in this call */
    double seconds;              /* wall time of the training steps */
    double final_loss;           /* mean loss of the last log window (its steps that an
                                  * earlier call of a resumed run ran included; NaN when
                                  * every step of it was skipped) */
    uint64_t device_bytes;       /* the training graph's device memory */
    bool evaluated;
    vp_coco_stats stats;         /* the final evaluation's (when evaluated) */
    int ranks;                   /* processes in the job (1 without MPI) */
    uint64_t allreduce_bytes;    /* gradient bytes averaged across ranks per step */
    double allreduce_seconds;    /* spent averaging them (reading, MPI, writing back) */
    double allreduce_exposed_seconds; /* the part the backward pass did not hide (an upper
                                       * bound; all of it without buckets) */
    uint32_t buckets;            /* gradient buckets per step (0: one all-reduce after the
                                  * backward pass) */
    int interrupted;             /* the signal that stopped the run (opts.interrupt; 0: none) */
    int64_t stopped_at;          /* the step of the checkpoint an interruption or
                                  * opts.stop_after left (0: the run went to the end) */
    int64_t skipped;             /* steps skipped for a non-finite loss or gradient norm */
    bool completed;              /* --resume found the run at its last step with outputs
                                  * missing, and wrote them (no step ran) */
} vp_train_result;

vp_status vp_train_run(vp_device *dev, const vp_config *root, const vp_train_opts *o,
                       vp_train_result *out);

/* ---- evaluation of a model on a COCO split (evaluate.c) ----------------------- */

/* Run m (built for inference with `batch` images) over every image of the
 * dataset at ann/images, write COCO results (segmentation as compressed
 * RLE, category ids mapped back) to results_path atomically when not NULL,
 * and score them against ann as pycocotools does. progress_label: print a
 * line per batch on a terminal (NULL: quiet). dist (NULL: one process):
 * every rank runs its share of the images (every size-th), rank 0 gathers
 * the detections in one process's order, writes and scores them; the other
 * ranks' *stats are left alone. Collective then. */
struct vp_dist;
vp_status vp_evaluate(vp_model *m, int64_t batch, const char *ann, const char *images,
                      const char *results_path, const char *progress_label,
                      const struct vp_dist *dist, vp_coco_stats *stats);

/* One picture (predict.c): m (built for inference, batch 1) on the image
 * at image_path, and a PNG at png_path of the image with every instance
 * scoring >= threshold drawn in its own colour with "class score" (class
 * names from names' categories when not NULL). *drawn: how many. */
struct vp_dataset;
vp_status vp_predict_picture(vp_model *m, const char *image_path, const struct vp_dataset *names,
                             float threshold, const char *png_path, int *drawn);

/* Copy every parameter of src into dst by position (two models built from
 * one config, e.g. training and inference). */
vp_status vp_model_copy_params(const vp_model *src, vp_model *dst);

#endif
