/*
 * The vpeft command: one function per subcommand, each returning the
 * process exit status (0 ok, 1 failure, 2 usage error).
 */
#ifndef VP_CLI_H
#define VP_CLI_H

#include <stdbool.h>

#include "runtime/runtime.h"

int vp_cli_devices(int argc, char **argv);
int vp_cli_plugins(int argc, char **argv);
int vp_cli_plugin_test(int argc, char **argv);
int vp_cli_info(int argc, char **argv);
int vp_cli_embed(int argc, char **argv);
int vp_cli_merge(int argc, char **argv);
int vp_cli_eval(int argc, char **argv);
int vp_cli_make_shapes(int argc, char **argv);

/* Create an instance honouring VPEFT_VALIDATION; prints the error itself. */
vp_status vp_cli_instance(vp_instance **inst);
/* The device VPEFT_DEVICE names, or the default one; the message is set
 * (not printed) on failure. */
vp_status vp_cli_device(vp_instance *inst, vp_device **dev);
/* Whether an environment variable is set to a true value (not "", "0"). */
bool vp_env_flag(const char *name);

#endif
