/*
 * The host side of the plugin ABI: the one vp_host_api table every plugin
 * gets at init (vpeft/host.h). Members point straight at the core functions
 * whose signatures they copy, so the compiler checks that they agree.
 */
#ifndef VP_PLUGIN_HOST_H
#define VP_PLUGIN_HOST_H

#include <vpeft/host.h>

/* The table; static, valid for the life of the process. */
const vp_host_api *vp_host_api_get(void);

#endif
