# vpeft-plugin.mk - GNU make rules that build a vpeft plugin. A plugin's
# Makefile sets three variables and includes this file:
#
#     PLUGIN  = ia3                # -> vpeft-ia3.so
#     SOURCES = ia3.c              # C11 sources, relative to the Makefile
#     SHADERS = ia3_scale.comp     # GLSL compute shaders (may be empty)
#     PKG_CONFIG ?= pkg-config
#     VPEFT_SDKDIR ?= $(shell $(PKG_CONFIG) --variable=sdkdir vpeft 2>/dev/null)
#     include $(VPEFT_SDKDIR)/vpeft-plugin.mk
#
# Each shader <stem>.comp becomes <stem>.spv.h in OBJDIR, defining
# `static const uint32_t vp_spv_<stem>[]` (its SPIR-V for Vulkan 1.2): include
# it from the one C file that registers the kernel. The plugin is compiled
# with -std=c11 -fPIC -fvisibility=hidden and linked with the version script
# vpeft-plugin.map next to this file, so it exports vp_plugin_entry and
# nothing else, and with -z defs, so that a call into libvpeft (which a
# plugin must reach through the host table instead) fails at link time.
#
#   make              OUTDIR/vpeft-$(PLUGIN).so
#   make install      into $(DESTDIR)$(PLUGINDIR)
#   make uninstall    remove it from there
#   make check        `vpeft plugins --check` on the .so, then `vpeft
#                     plugin-test --config $(TEST_CONFIG)` when that exists
#   make clean        remove what the build made
#
# Variables (command line or environment), with their defaults:
#   SRCDIR        where SOURCES and SHADERS are [the including Makefile's
#                 directory; the current one when make runs this file directly]
#   OBJDIR        objects, generated headers, dependency files [obj]
#   OUTDIR        the .so [.]
#   CC, CFLAGS, CPPFLAGS, LDFLAGS, LDLIBS   [cc, -O2, -, -, -]; add -lm to
#                 LDLIBS for libm (-z defs wants every library named)
#   VPEFT_CFLAGS  flags that find <vpeft/*.h> [pkg-config --cflags vpeft]
#   GLSLANG       the shader compiler [glslangValidator]
#   PLUGINDIR     install directory [pkg-config --variable=plugindir vpeft]
#   VPEFT         the vpeft command for make check [<pkg-config bindir>/vpeft]
#   TEST_CONFIG   plugin-test's config for make check [$(SRCDIR)/test.json if present]
#
# vpeft's own build (Makefile.in) runs this file for sdk/template and every
# plugins/<name>/, with VPEFT_CFLAGS pointing at the source tree.

vp_sdkdir := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
# The including Makefile's directory; run directly (make -f vpeft-plugin.mk
# PLUGIN=... SOURCES=...), the current one.
vp_mkdir := $(if $(filter 1,$(words $(MAKEFILE_LIST))),.,$(patsubst %/,%,$(dir $(firstword $(MAKEFILE_LIST)))))

PKG_CONFIG ?= pkg-config
GLSLANG ?= glslangValidator
NM ?= nm
CFLAGS ?= -O2
SRCDIR ?= $(vp_mkdir)
OBJDIR ?= obj
OUTDIR ?= .
PLUGINDIR ?= $(shell $(PKG_CONFIG) --variable=plugindir vpeft 2>/dev/null)
VPEFT ?= $(shell $(PKG_CONFIG) --variable=bindir vpeft 2>/dev/null)/vpeft
TEST_CONFIG ?= $(wildcard $(SRCDIR)/test.json)

# ---- what the including Makefile gave us ------------------------------------
ifeq ($(strip $(PLUGIN)),)
$(error vpeft-plugin.mk: set PLUGIN (the plugin's config name, [a-z0-9_]+) before including it)
endif
ifneq ($(shell printf '%s\n' '$(PLUGIN)' | LC_ALL=C grep -cx '[a-z0-9_][a-z0-9_]*'),1)
$(error vpeft-plugin.mk: PLUGIN '$(PLUGIN)' is not a config name: use only a-z, 0-9 and _)
endif
ifeq ($(strip $(SOURCES)),)
$(error vpeft-plugin.mk: set SOURCES (the plugin's .c files) before including it)
endif
ifneq ($(filter-out %.c,$(SOURCES)),)
$(error vpeft-plugin.mk: SOURCES must be .c files, not: $(filter-out %.c,$(SOURCES)))
endif
ifneq ($(filter-out %.comp,$(SHADERS)),)
$(error vpeft-plugin.mk: SHADERS must be .comp files, not: $(filter-out %.comp,$(SHADERS)))
endif

vp_stems := $(basename $(notdir $(SHADERS)))
# A stem names a C array, and two shaders with one stem would both be vp_spv_<stem>.
vp_bad_stems := $(shell for s in $(vp_stems); do printf '%s\n' "$$s" | LC_ALL=C grep -qx '[A-Za-z_][A-Za-z0-9_]*' || printf '%s ' "$$s"; done)
ifneq ($(vp_bad_stems),)
$(error vpeft-plugin.mk: shader names must be C identifiers (they name vp_spv_<stem>): $(vp_bad_stems))
endif
ifneq ($(words $(vp_stems)),$(words $(sort $(vp_stems))))
$(error vpeft-plugin.mk: two SHADERS have the same file name: $(SHADERS))
endif

# Asked only when not given (the in-tree build gives it), and only once.
ifeq ($(origin VPEFT_CFLAGS),undefined)
VPEFT_CFLAGS := $(shell $(PKG_CONFIG) --cflags vpeft 2>/dev/null)
ifneq ($(.SHELLSTATUS),0)
$(error vpeft-plugin.mk: '$(PKG_CONFIG) --cflags vpeft' failed: install vpeft, or set PKG_CONFIG_PATH to the directory that holds vpeft.pc)
endif
endif

vp_so := $(OUTDIR)/vpeft-$(PLUGIN).so
vp_objs := $(SOURCES:%.c=$(OBJDIR)/%.o)
vp_spv := $(vp_stems:%=$(OBJDIR)/%.spv.h)
vp_cflags = -std=c11 -fPIC -fvisibility=hidden -Wall -Wextra -I$(OBJDIR) $(VPEFT_CFLAGS) \
            $(CPPFLAGS) $(CFLAGS)

.PHONY: all install uninstall check clean
.DELETE_ON_ERROR:

# The recipe keeps make quiet when there is nothing to do.
all: $(vp_so)
	@:

# ---- shaders: <stem>.comp -> OBJDIR/<stem>.spv.h ------------------------------
# glslangValidator --vn writes `const uint32_t vp_spv_<stem>[] = {...};`,
# which has external linkage and needs <stdint.h>; the header gets both fixed
# so that any one C file can include it. The depfile lists the #includes.
define vp_shader_rule
$(OBJDIR)/$(2).spv.h: $(SRCDIR)/$(1)
	@mkdir -p $$(@D)
	$$(GLSLANG) -V --target-env vulkan1.2 --quiet --vn vp_spv_$(2) --depfile $$(@:.h=.d) -o $$@ $$<
	@{ printf '/* %s: generated from %s by vpeft-plugin.mk; do not edit. */\n' '$(2).spv.h' '$(1)'; \
	   printf '#include <stdint.h>\n'; \
	   sed 's/^const uint32_t /static const uint32_t /' $$@; } >$$@.tmp
	@grep -q '^static const uint32_t vp_spv_$(2)\[\]' $$@.tmp || \
	    { echo "vpeft-plugin.mk: $$(GLSLANG) wrote no array vp_spv_$(2) into $$@" >&2; \
	      rm -f $$@.tmp; exit 1; }
	@mv $$@.tmp $$@
endef
$(foreach s,$(SHADERS),$(eval $(call vp_shader_rule,$(s),$(basename $(notdir $(s))))))

# ---- C -----------------------------------------------------------------------
# Every object waits for the generated headers on the first build; after
# that the -MMD files say which object includes which.
$(OBJDIR)/%.o: $(SRCDIR)/%.c | $(vp_spv)
	@mkdir -p $(@D)
	$(CC) $(vp_cflags) -MMD -MP -c -o $@ $<

# After linking, a check that the entry point made it out: a version script
# that names an undefined symbol is not an error to the linker.
$(vp_so): $(vp_objs) $(vp_sdkdir)/vpeft-plugin.map
	@mkdir -p $(@D)
	$(CC) -shared $(CFLAGS) $(LDFLAGS) -Wl,--version-script=$(vp_sdkdir)/vpeft-plugin.map \
	    -Wl,-z,defs -o $@ $(vp_objs) $(LDLIBS)
	@$(NM) -D --defined-only $@ | grep -q ' T vp_plugin_entry$$' || \
	    { echo "vpeft-plugin.mk: $@ does not define vp_plugin_entry (see vpeft/plugin.h)" >&2; \
	      rm -f $@; exit 1; }

# ---- install, check, clean ----------------------------------------------------
install: all
	@test -n '$(PLUGINDIR)' || { echo "vpeft-plugin.mk: no PLUGINDIR: set it, or make pkg-config find vpeft.pc" >&2; exit 1; }
	mkdir -p '$(DESTDIR)$(PLUGINDIR)'
	cp $(vp_so) '$(DESTDIR)$(PLUGINDIR)/vpeft-$(PLUGIN).so'
	chmod 755 '$(DESTDIR)$(PLUGINDIR)/vpeft-$(PLUGIN).so'

uninstall:
	@test -n '$(PLUGINDIR)' || { echo "vpeft-plugin.mk: no PLUGINDIR: set it, or make pkg-config find vpeft.pc" >&2; exit 1; }
	rm -f '$(DESTDIR)$(PLUGINDIR)/vpeft-$(PLUGIN).so'

check: all
	$(VPEFT) plugins --check $(vp_so)
ifneq ($(TEST_CONFIG),)
	VPEFT_PLUGIN_PATH=$(OUTDIR) $(VPEFT) plugin-test --config $(TEST_CONFIG)
else
	@echo "vpeft-plugin.mk: no TEST_CONFIG (test.json): plugin-test skipped"
endif

clean:
	rm -f $(vp_so) $(vp_objs) $(vp_objs:.o=.d) $(vp_spv) $(vp_spv:.h=.d)
	@-rmdir $(OBJDIR) 2>/dev/null || true

-include $(vp_objs:.o=.d) $(vp_spv:.h=.d)
