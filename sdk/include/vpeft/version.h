/*
 * vpeft/version.h - release and ABI version numbers.
 *
 *     #include <vpeft/version.h>
 *     #if VP_ABI_MAJOR != 1
 *     #error "this plugin is written against ABI 1"
 *     #endif
 *
 * The release version (VP_VERSION_*) names a build of vpeft. The ABI version
 * (VP_ABI_*) names the plugin interface: a new minor only appends to tables
 * and structs, a new major breaks them, and the loader refuses a plugin whose
 * major differs from the host's.
 */
#ifndef VPEFT_VERSION_H
#define VPEFT_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define VP_VERSION_MAJOR 0
#define VP_VERSION_MINOR 1
#define VP_VERSION_PATCH 0
#define VP_VERSION_STRING "0.1.0"

#define VP_ABI_MAJOR 1
#define VP_ABI_MINOR 2

#ifdef __cplusplus
}
#endif

#endif /* VPEFT_VERSION_H */
