/*
 * The vpeft command: one function per subcommand, each returning the
 * process exit status (0 ok, 1 failure, 2 usage error).
 */
#ifndef VP_CLI_H
#define VP_CLI_H

#include <stdbool.h>

#include "config/config.h"
#include "runtime/runtime.h"

int vp_cli_devices(int argc, char **argv);
int vp_cli_plugins(int argc, char **argv);
int vp_cli_plugin_test(int argc, char **argv);
int vp_cli_info(int argc, char **argv);
int vp_cli_embed(int argc, char **argv);
int vp_cli_forward(int argc, char **argv);
int vp_cli_merge(int argc, char **argv);
int vp_cli_eval(int argc, char **argv);
int vp_cli_make_shapes(int argc, char **argv);
int vp_cli_init(int argc, char **argv);
int vp_cli_train(int argc, char **argv);
int vp_cli_predict(int argc, char **argv);
int vp_cli_demo(int argc, char **argv);

/* For Hugging Face Mask2Former checkpoints (vpeft init, vpeft demo --hf).
 * The default PEFT method: LoRA on the attention's query and value
 * projections, the study's r = 8, alpha = 8. "query" and "value" are
 * Swin's (model.pixel_level_module.encoder.encoder.layers.<l>.blocks.<b>.
 * attention.self.query); "q_proj" and "v_proj" the transformer decoder's
 * self-attention (model.transformer_module.decoder.layers.<i>.self_attn.
 * q_proj). HF PEFT matches list entries against the end of the module
 * path, so the same list selects the same modules there. The decoder's
 * cross-attention is nn.MultiheadAttention with a packed in_proj (no
 * q_proj to adapt), the pixel decoder's deformable attention has
 * value_proj / sampling_offsets / attention_weights / output_proj (other
 * names: lora_deform adapts them). */
#define VP_HF_LORA_TARGETS "[\"query\", \"value\", \"q_proj\", \"v_proj\"]"
/* What trains besides LoRA: the class predictor (new when the dataset's
 * classes are not the checkpoint's) and the mask embedding MLP, as the
 * study's PEFT runs trained the head's class and mask embeddings. */
#define VP_HF_EMBED_TRAINABLE "[\"class_predictor.*\", \"model.transformer_module.decoder.mask_predictor.*\"]"

/* The exit status of every command: 0 for VP_OK; 2 for bad input: a
 * config error (VP_ERR_CONFIG), a malformed file (VP_ERR_FORMAT), tensors
 * whose shapes do not fit the model (VP_ERR_SHAPE); 1 for a runtime
 * failure (a file that cannot be read or written, memory, the device). A
 * bad command line is 2 too, decided where it is parsed. */
int vp_cli_exit_code(vp_status st);
/* Load a config and apply --set assignments; prints the error itself. */
vp_status vp_cli_config(const char *path, const char *const *sets, int n_sets, vp_config **out);
/* A config's model built for inference with `batch` images, then
 * model.weights (by the model) and, when not NULL, the full weights file
 * weights and the PEFT methods saved in adapter_dir. */
struct vp_model;
vp_status vp_cli_infer_model(vp_device *dev, const vp_config *cfg, const char *weights,
                             const char *adapter_dir, int64_t batch, struct vp_model **out);
/* The 12 numbers in pycocotools' summarize() layout, on stdout. */
struct vp_coco_stats;
void vp_cli_print_stats(const struct vp_coco_stats *s);
/* The same with each number's interval, "[lo, hi]" (both NULL: none). */
void vp_cli_print_stats_ci(const struct vp_coco_stats *s, const struct vp_coco_stats *lo,
                           const struct vp_coco_stats *hi);

/* Create an instance honouring VPEFT_VALIDATION; prints the error itself. */
vp_status vp_cli_instance(vp_instance **inst);
/* The device VPEFT_DEVICE names, or the default one; the message is set
 * (not printed) on failure. */
vp_status vp_cli_device(vp_instance *inst, vp_device **dev);
/* The device of a rank of a data-parallel job (core/dist): VPEFT_DEVICE
 * when set, else the local_rank-th device of the best kind (shared
 * round-robin, with a warning, when there are fewer than ranks); the
 * default device in a job of one. */
struct vp_dist;
vp_status vp_cli_rank_device(const struct vp_dist *d, vp_instance *inst, vp_device **dev);
/* Whether an environment variable is set to a true value (not "", "0"). */
bool vp_env_flag(const char *name);

#endif
