/*
 * vpeft/vpeft.h - everything a plugin needs, in one include.
 *
 *     #include <vpeft/vpeft.h>
 *     static const vp_host_api *H;   // set in init(), see vpeft/plugin.h
 *
 * The SDK is these headers, the pkg-config file vpeft.pc, the makefile
 * fragment vpeft-plugin.mk and the template plugin; docs/plugin-guide.md
 * walks through writing one.
 */
#ifndef VPEFT_VPEFT_H
#define VPEFT_VPEFT_H

#include <vpeft/version.h>
#include <vpeft/status.h>
#include <vpeft/log.h>
#include <vpeft/tensor.h>
#include <vpeft/config.h>
#include <vpeft/site.h>
#include <vpeft/kernel.h>
#include <vpeft/plugin.h>
#include <vpeft/peft.h>
#include <vpeft/backbone.h>
#include <vpeft/head.h>
#include <vpeft/host.h>

#endif /* VPEFT_VPEFT_H */
