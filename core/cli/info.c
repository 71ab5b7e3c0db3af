/*
 * `vpeft info CONFIG`: the model a config describes, built but not
 * compiled (no device memory): its module tree with parameter counts, the
 * trainable set in Hugging Face PEFT's words, and with --sites every place
 * a PEFT method can attach and which methods did.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"
#include "model/model.h"
#include "util/error.h"

/* A module: one path component; an index is a node of its own, shown with
 * its parent's name ("layer.3"). */
typedef struct node {
    char name[96];
    bool index;
    uint64_t total, trainable;
    struct node *child, *next, *last_child;
} node;

static node *child_of(node *parent, const char *name)
{
    for (node *c = parent->child; c; c = c->next)
        if (!strcmp(c->name, name))
            return c;
    node *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->name, sizeof c->name, "%.95s", name);
    if (parent->last_child)
        parent->last_child->next = c;
    else
        parent->child = c;
    parent->last_child = c;
    return c;
}

static void free_tree(node *n)
{
    for (node *c = n->child, *next; c; c = next) {
        next = c->next;
        free_tree(c);
        free(c);
    }
}

/* Add a parameter's count along its module path (its last component, the
 * tensor's own name, is not a module). */
static bool add_param(node *root, const char *name, uint64_t n, bool trainable)
{
    char comp[12][96];
    bool index[12];
    int k = 0;
    const char *p = name;
    while (*p && k < 12) {
        size_t len = strcspn(p, ".");
        index[k] = k > 0 && len > 0 && strspn(p, "0123456789") == len;
        if (index[k]) /* "layer" "3" -> shown as "layer.3" */
            snprintf(comp[k], sizeof comp[0], "%.40s.%.*s", comp[k - 1], (int)len, p);
        else
            snprintf(comp[k], sizeof comp[0], "%.*s", (int)len, p);
        k++;
        p += len + (p[len] == '.');
    }
    root->total += n;
    root->trainable += trainable ? n : 0;
    node *cur = root;
    for (int i = 0; i < k - 1; i++) {
        if (!(cur = child_of(cur, comp[i])))
            return false;
        cur->index = index[i];
        cur->total += n;
        cur->trainable += trainable ? n : 0;
    }
    return true;
}

static void commas(uint64_t v, char *buf, size_t n)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
}

/* A module whose children are all indices (a list of layers) is not a
 * level of its own: its children are shown in its place. */
static bool is_list(const node *n)
{
    if (!n->child)
        return false;
    for (const node *c = n->child; c; c = c->next)
        if (!c->index)
            return false;
    return true;
}

static void print_tree(const node *n, int depth, int max_depth)
{
    for (const node *c = n->child; c; c = c->next) {
        if (is_list(c)) {
            print_tree(c, depth, max_depth);
            continue;
        }
        char t[40], tr[40], label[160];
        commas(c->total, t, sizeof t);
        commas(c->trainable, tr, sizeof tr);
        snprintf(label, sizeof label, "%*s%s", 2 * depth, "", c->name);
        printf("%-56s %14s %14s\n", label, t, tr);
        if (depth + 1 < max_depth)
            print_tree(c, depth + 1, max_depth);
    }
}

static const char *site_kind(vp_site_kind k)
{
    switch (k) {
    case VP_SITE_LINEAR: return "linear";
    case VP_SITE_ATTN_OUT: return "attention output";
    case VP_SITE_FFN_OUT: return "ffn output";
    case VP_SITE_DEFORM: return "deformable module";
    }
    return "?";
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vpeft info CONFIG [--depth N] [--sites]\n\n"
               "Build the model CONFIG describes (backbone, head, PEFT methods; nothing is\n"
               "compiled or run) and print its modules with their parameter counts, total\n"
               "and trainable, then the trainable set as Hugging Face PEFT prints it:\n"
               "  trainable params: N || all params: M || trainable%%: P\n\n"
               "options:\n"
               "  --depth N   levels of the module tree to print (default 3; 0: none)\n"
               "  --sites     also list every site where a PEFT method can attach (linear\n"
               "              layers, attention and FFN outputs, deformable modules), with\n"
               "              the methods of the config that attached there\n"
               "  -h, --help  this help\n");
}

int vp_cli_info(int argc, char **argv)
{
    static const struct option opts[] = {{"depth", required_argument, NULL, 'd'},
                                         {"sites", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    long depth = 3;
    bool sites = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        } else if (c == 's') {
            sites = true;
        } else if (c == 'd') {
            char *end;
            depth = strtol(optarg, &end, 10);
            if (!*optarg || *end || depth < 0 || depth > 8) {
                fprintf(stderr, "vpeft info: --depth %s: expected 0 to 8\n", optarg);
                return 2;
            }
        } else {
            fprintf(stderr, "vpeft info: %s '%s' (see vpeft info --help)\n",
                    c == ':' ? "missing value for" : "unknown option", argv[optind - 1]);
            return 2;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "vpeft info: %s (see vpeft info --help)\n",
                argc - optind ? "one CONFIG file, please" : "which CONFIG?");
        return 2;
    }

    vp_config *cfg = NULL;
    vp_instance *inst = NULL;
    vp_device *dev = NULL;
    vp_model *m = NULL;
    int rc = 1;
    vp_status st = vp_cfg_load(argv[optind], &cfg);
    if (!st && !vp_cli_instance(&inst)) {
        st = vp_cli_device(inst, &dev);
        if (!st)
            st = vp_model_create(dev, cfg, &(vp_model_opts){.batch = 1, .no_compile = true}, &m);
    } else if (!st) {
        goto out; /* vp_cli_instance printed why */
    }
    if (st) {
        fprintf(stderr, "vpeft: %s\n", vp_error_last());
        rc = vp_cli_exit_code(st);
        goto out;
    }

    const vp_build *b = vp_model_build(m);
    node root = {.name = ""};
    for (uint32_t i = 0; i < vp_build_param_count(b); i++) {
        const vp_build_param *p = vp_build_param_at(b, i);
        if (!add_param(&root, vp_gt_name(p->t), (uint64_t)vp_gt_nelem(p->t),
                       vp_g_grad(p->t) || vp_gt_trainable(p->t))) {
            fprintf(stderr, "vpeft: out of host memory\n");
            free_tree(&root);
            goto out;
        }
    }
    const vp_peft_set *pefts = vp_model_pefts(m);
    printf("model: %s (backbone) + %s (head)", vp_model_plugin_name(m, VP_PLUGIN_BACKBONE),
           vp_model_plugin_name(m, VP_PLUGIN_HEAD));
    for (uint32_t i = 0; i < pefts->n; i++)
        printf("%s%s", i ? ", " : "; peft: ", pefts->items[i].name);
    printf("\n\n");
    if (depth > 0) {
        printf("%-56s %14s %14s\n", "module", "parameters", "trainable");
        print_tree(&root, 0, (int)depth);
        printf("\n");
    }
    if (sites) {
        int w = 64; /* the longest path: HF's run to 80 characters */
        for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
            int len = (int)strlen(vp_build_site_at(b, i)->path);
            w = len > w ? len : w;
        }
        printf("%-*s %-26s %s\n", w, "site", "kind", "attached");
        for (uint32_t i = 0; i < vp_build_site_count(b); i++) {
            const vp_build_site *s = vp_build_site_at(b, i);
            char shape[48] = "";
            if (s->kind != VP_SITE_DEFORM)
                snprintf(shape, sizeof shape, " %lld->%lld", (long long)s->in_features,
                         (long long)s->out_features);
            char kind[64];
            snprintf(kind, sizeof kind, "%s%s", site_kind(s->kind), shape);
            printf("%-*s %-26s", w, s->path, kind);
            for (uint32_t k = 0, first = 1; k < pefts->n; k++)
                if (s->attached & (1u << k)) {
                    printf("%s%s", first ? " " : ", ", pefts->items[k].name);
                    first = 0;
                }
            printf("\n");
        }
        printf("\n");
    }
    char t[40], a[40];
    commas(root.trainable, t, sizeof t);
    commas(root.total, a, sizeof a);
    printf("trainable params: %s || all params: %s || trainable%%: %.4f\n", t, a,
           root.total ? 100.0 * (double)root.trainable / (double)root.total : 0.0);
    free_tree(&root);
    rc = 0;
out:
    vp_model_destroy(m);
    vp_device_destroy(dev);
    vp_instance_destroy(inst);
    vp_cfg_free(cfg);
    return rc;
}
