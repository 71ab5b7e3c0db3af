/*
 * The fixture plugins that tests/check_plugin.c loads: one source, built by
 * the Makefile once per fixture into obj/tests/plugins/<dir>/vpeft-<name>.so
 * with the flags a third-party plugin uses (the SDK headers only, hidden
 * visibility, never the core library), each fixture chosen by -D options:
 *
 *   FX_NAME="good"         the descriptor's name (required)
 *   FX_KIND=VP_PLUGIN_PEFT the descriptor's kind (default peft; any number)
 *   FX_VERSION="1.0.0"     the descriptor's version (default "1.0.0")
 *   FX_WRONG_MAJOR         abi_major = VP_ABI_MAJOR + 1
 *   FX_NEWER_MINOR         abi_minor + 1, and a descriptor and an interface
 *                          table with one member appended, as a plugin
 *                          built against a later 1.x SDK has
 *   FX_NO_ENTRY            exports vpeft_plugin_entry, a misspelt entry
 *   FX_SMALL_DESC          a descriptor whose size falls short of ABI 1.0's
 *   FX_INIT_FAIL           init fails with a message set via host->error
 *   FX_NO_IFACE            get_interface gives NULL for every id
 *   FX_SMALL_IFACE         the interface table's size misses attach
 *
 * init and fini log "<name>: init" and "<name>: fini" at debug level through
 * the host, which is how the tests count them: a plugin exports nothing
 * but its entry, so there is no counter to read. The peft interface works
 * trivially: attach never attaches and leaves y as it was.
 */
#include <stdlib.h>
#include <string.h>

#include <vpeft/vpeft.h>

#ifndef FX_NAME
#error "FX_NAME must name the fixture"
#endif
#ifndef FX_KIND
#define FX_KIND VP_PLUGIN_PEFT
#endif
#ifndef FX_VERSION
#define FX_VERSION "1.0.0"
#endif

static const vp_host_api *H;

static vp_status fx_init(const vp_host_api *host)
{
    H = host;
    H->log(VP_LOG_DEBUG, "%s: init", FX_NAME);
#ifdef FX_INIT_FAIL
    return H->error(VP_ERR_CONFIG, "needs %s to be set", "FX_MAGIC");
#else
    return VP_OK;
#endif
}

static void fx_fini(void)
{
    H->log(VP_LOG_DEBUG, "%s: fini", FX_NAME);
    H = NULL;
}

/* One instance per config entry; it holds nothing, but is really allocated
 * so that a destroy without a create (or twice) shows up under ASan. */
typedef struct fx_self {
    int attaches;
} fx_self;

static vp_status fx_create(const vp_config *cfg, void **self)
{
    (void)cfg;
    fx_self *s = calloc(1, sizeof *s);
    if (!s)
        return H->error(VP_ERR_NOMEM, "%s: out of memory", FX_NAME);
    *self = s;
    return VP_OK;
}

static void fx_destroy(void *self) { free(self); }

static vp_status fx_attach(void *self, vp_build *b, const vp_site *site, vp_gt *x, vp_gt **y,
                           bool *attached)
{
    (void)b, (void)site, (void)x, (void)y, (void)attached;
    ((fx_self *)self)->attaches++;
    return VP_OK;
}

#ifdef FX_NEWER_MINOR
/* What vp_peft_iface and vp_plugin_desc might look like in ABI 1.1. */
typedef struct fx_peft_iface_1_1 {
    vp_peft_iface base;
    vp_status (*later)(void *self);
} fx_peft_iface_1_1;
static const fx_peft_iface_1_1 peft_iface_1_1 = {
    {.size = sizeof peft_iface_1_1, .peft_type = "FIXTURE", .create = fx_create,
     .destroy = fx_destroy, .attach = fx_attach},
    NULL};
#define FX_PEFT_IFACE (&peft_iface_1_1.base)
#else
static const vp_peft_iface peft_iface = {
#ifdef FX_SMALL_IFACE
    .size = offsetof(vp_peft_iface, attach),
#else
    .size = sizeof peft_iface,
#endif
    .peft_type = "FIXTURE", .create = fx_create, .destroy = fx_destroy, .attach = fx_attach};
#define FX_PEFT_IFACE (&peft_iface)
#endif

static const void *fx_get_interface(const char *id)
{
#ifdef FX_NO_IFACE
    (void)id;
    return NULL;
#else
    return !strcmp(id, VP_PEFT_IFACE_ID) ? (const void *)FX_PEFT_IFACE : NULL;
#endif
}

#ifdef FX_WRONG_MAJOR
#define FX_ABI_MAJOR (VP_ABI_MAJOR + 1)
#else
#define FX_ABI_MAJOR VP_ABI_MAJOR
#endif

#ifdef FX_NEWER_MINOR
static const struct {
    vp_plugin_desc base;
    const char *homepage; /* the appended ABI 1.1 member */
} desc_1_1 = {{sizeof desc_1_1, FX_ABI_MAJOR, VP_ABI_MINOR + 1, FX_NAME, FX_KIND, FX_VERSION,
               "a fixture built against a newer minor ABI", fx_init, fx_fini, fx_get_interface},
              "https://example.org/"};
#define FX_DESC (&desc_1_1.base)
#else
static const vp_plugin_desc desc = {
#ifdef FX_SMALL_DESC
    offsetof(vp_plugin_desc, get_interface),
#else
    sizeof desc,
#endif
    FX_ABI_MAJOR, VP_ABI_MINOR, FX_NAME, FX_KIND, FX_VERSION,
    "a test fixture", fx_init, fx_fini, fx_get_interface};
#define FX_DESC (&desc)
#endif

#ifdef FX_NO_ENTRY
VP_PLUGIN_EXPORT const vp_plugin_desc *vpeft_plugin_entry(void);
VP_PLUGIN_EXPORT const vp_plugin_desc *vpeft_plugin_entry(void) { return FX_DESC; }
#else
VP_PLUGIN_EXPORT const vp_plugin_desc *vp_plugin_entry(void) { return FX_DESC; }
#endif
