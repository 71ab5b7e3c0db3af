/*
 * vpeft: the command-line entry point. Dispatches to subcommands; every
 * error is one line on stderr and a non-zero exit status.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vpeft/version.h>

#include "cli/cli.h"
#include "dist/dist.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"demo", vp_cli_demo, "the study's comparison of fine-tuning methods on synthetic data"},
    {"init", vp_cli_init, "write a run config for a Hugging Face checkpoint and a COCO dataset"},
    {"train", vp_cli_train, "fine-tune a config's model on a COCO dataset"},
    {"eval", vp_cli_eval, "COCO mask AP of a results file, or of a config's model"},
    {"predict", vp_cli_predict, "draw a config's predicted instances over images"},
    {"devices", vp_cli_devices, "list Vulkan devices and the features vpeft uses on each"},
    {"plugins", vp_cli_plugins, "list the plugins on the search path, or check a plugin file"},
    {"info", vp_cli_info, "a config's model: modules, parameter counts, the trainable set, sites"},
    {"embed", vp_cli_embed, "run a config's backbone on one image and save its outputs"},
    {"forward", vp_cli_forward, "run a config's model on a batch; save outputs, loss, gradients"},
    {"merge", vp_cli_merge, "fold saved PEFT methods into the base weights"},
    {"make-shapes", vp_cli_make_shapes, "write a synthetic shapes dataset (COCO format), domain A or B"},
    {"plugin-test", vp_cli_plugin_test, "check PEFT plugins on a small built-in model: gradients, training"},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft <command> [options]\n"
               "       vpeft <command> --help\n\n"
               "Parameter-efficient fine-tuning of vision transformers on any Vulkan device.\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\noptions:\n"
               "  -h, --help     show this help\n"
               "  -V, --version  print the version and the plugin ABI version\n\n"
               "environment:\n"
               "  VPEFT_DEVICE      device to use: an index or a name substring from\n"
               "                    `vpeft devices` (default: discrete > integrated GPU >\n"
               "                    virtual > CPU)\n"
               "  VPEFT_PROFILE=1   print GPU time per kernel when the device is released\n"
               "  VPEFT_VALIDATION=1  run under VK_LAYER_KHRONOS_validation if installed\n"
               "  VPEFT_LOG         debug, info (default), warn or error\n"
               "  VPEFT_PLUGIN_PATH  directories searched first for vpeft-<name>.so plugins,\n"
               "                    separated by ':' (see vpeft plugins --help)\n"
               "  XDG_CACHE_HOME    pipeline cache goes to $XDG_CACHE_HOME/vpeft\n"
               "                    (default ~/.cache/vpeft)\n");
}

bool vp_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

vp_status vp_cli_instance(vp_instance **inst)
{
    vp_instance_opts o = {.validation = vp_env_flag("VPEFT_VALIDATION")};
    vp_status st = vp_instance_create(&o, inst);
    if (st)
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
    return st;
}

vp_status vp_cli_device(vp_instance *inst, vp_device **dev)
{
    *dev = NULL;
    const char *spec = getenv("VPEFT_DEVICE");
    uint32_t idx = vp_instance_default_device(inst);
    vp_status st = spec && *spec ? vp_instance_pick(inst, spec, &idx) : VP_OK;
    return st ? st : vp_device_create(inst, idx, NULL, dev);
}

/* A rank's device: VPEFT_DEVICE when set, else the local_rank-th of the
 * devices of the best kind on this machine (shared round-robin, with a
 * warning, when there are fewer than ranks). */
vp_status vp_cli_rank_device(const vp_dist *d, vp_instance *inst, vp_device **dev)
{
    const char *spec = getenv("VPEFT_DEVICE");
    if (d->size == 1 || (spec && *spec))
        return vp_cli_device(inst, dev);
    uint32_t best = vp_instance_default_device(inst), n = 0, pick = best;
    VkPhysicalDeviceType type = vp_instance_device_info(inst, best)->type;
    for (uint32_t i = 0; i < vp_instance_device_count(inst); i++)
        n += vp_instance_device_info(inst, i)->type == type;
    uint32_t k = 0;
    for (uint32_t i = 0; i < vp_instance_device_count(inst); i++) /* the (local_rank % n)-th */
        if (vp_instance_device_info(inst, i)->type == type && k++ == (uint32_t)d->local_rank % n)
            pick = i;
    if (d->local_size > (int)n && d->local_rank == 0)
        fprintf(stderr, "vpeft: warning: %d ranks on %s share %u device%s\n", d->local_size,
                d->host, n, n == 1 ? "" : "s");
    return vp_device_create(inst, pick, NULL, dev);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("vpeft %s (plugin ABI %d.%d)\n", VP_VERSION_STRING, VP_ABI_MAJOR, VP_ABI_MINOR);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "vpeft: unknown command '%s'; commands:", cmd);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(stderr, " %s", commands[i].name);
    fprintf(stderr, " (see vpeft --help)\n");
    return 2;
}
